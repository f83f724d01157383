"""The process's shared backpressure controllers: one per (provider, base URL, model).

One controller exists per (provider, base URL, model) per process; asking for it again with
another configuration is an error, never silently ignored. One pause gate exists per
(provider, base URL), so every agent that calls the same model is limited together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from multiagent._metrics import get_metrics
from multiagent.errors import ConfigError
from multiagent.models._gate import ProviderGate
from multiagent.models.backpressure import BackpressureConfig, BackpressureController

_REGISTRY_LOCK = threading.Lock()
_CONTROLLERS: dict[tuple[str, str, str], BackpressureController] = {}
_GATES: dict[tuple[str, str], ProviderGate] = {}
_REMOVERS: list[Callable[[], None]] = []


def shared_controller(
    *,
    provider: str,
    model: str,
    base_url: str | None,
    config: BackpressureConfig,
    redis_url: str | None = None,
    fallback_fraction: float = 0.5,
) -> BackpressureController:
    """The process's controller for (provider, base URL, model), created on first use.

    Every caller of one key shares one controller, so agents calling the same model are
    limited together. A later caller must ask for the same ``config``: a controller cannot
    honour two sets of bounds at once, and quietly keeping the first would hand the second
    caller limits it never asked for. Its state is exported to the metrics store as
    ``multiagent_backpressure_*{provider,model}``.

    Args:
        provider: The provider name (``sim``, ``openai``, ...).
        model: The model name.
        base_url: The provider endpoint; ``None`` for the provider's default.
        config: The bounds the caller wants.
        redis_url: When given, the controller shared through this Redis by every process
            (:mod:`multiagent.models.backpressure_redis`); ``fallback_fraction`` of its last
            limit is what the processes use together while Redis is away.

    Raises:
        ConfigError: A controller for this key exists with another configuration; the message
            names the key, each differing field with both values, and the fix.
    """
    if redis_url:
        from multiagent.models.backpressure_redis import shared_redis_controller

        return shared_redis_controller(
            provider=provider, model=model, base_url=base_url, config=config,
            redis_url=redis_url, fallback_fraction=fallback_fraction,
        )  # fmt: skip
    endpoint = base_url or "default"
    with _REGISTRY_LOCK:
        existing = _CONTROLLERS.get((provider, model, endpoint))
        if existing is not None:
            if existing.config != config:
                raise ConfigError(_conflict(provider, endpoint, model, existing.config, config))
            return existing
        gate = _GATES.setdefault((provider, endpoint), ProviderGate(clock=time.monotonic))
        controller = BackpressureController(
            config, gate=gate, labels={"provider": provider, "model": model}
        )
        _CONTROLLERS[(provider, model, endpoint)] = controller
        _REMOVERS.append(get_metrics().add_collector(controller.samples))
    return controller


def check_shared_controller(
    *, provider: str, model: str, base_url: str | None, config: BackpressureConfig
) -> None:
    """Raise what :func:`shared_controller` would for ``config``, creating nothing: a pipeline
    checks this when it is built, so a conflict is named where it is made (a second profile
    in one notebook), not at a model call deep in a running graph.

    Raises:
        ConfigError: This process's controller for the key has another configuration.
    """
    endpoint = base_url or "default"
    with _REGISTRY_LOCK:
        existing = _CONTROLLERS.get((provider, model, endpoint))
    if existing is not None and existing.config != config:
        raise ConfigError(_conflict(provider, endpoint, model, existing.config, config))


def _conflict(
    provider: str, endpoint: str, model: str, first: BackpressureConfig, second: BackpressureConfig
) -> str:
    """One line: which key, which fields differ (existing vs asked for), and the fix."""
    old, new = asdict(first), asdict(second)
    changed = ", ".join(f"{k}={old[k]!r} vs {new[k]!r}" for k in old if old[k] != new[k])
    return (
        f"backpressure controller for provider={provider!r} base_url={endpoint!r} "
        f"model={model!r} already exists with another configuration (existing vs asked: "
        f"{changed}); give every pipeline of this process the same rate_limit settings, or "
        "call multiagent.models.adaptive.reset_shared_controllers() before reconfiguring"
    )


def reset_shared_controllers() -> None:
    """Forget every shared controller and gate (a benchmark's fresh start, test isolation)."""
    with _REGISTRY_LOCK:
        _CONTROLLERS.clear()
        _GATES.clear()
        removers = list(_REMOVERS)
        _REMOVERS.clear()
    for remove in removers:
        remove()


def shared_controllers() -> dict[tuple[str, str, str], BackpressureController]:
    """Every live shared controller, keyed by (provider, model, base URL)."""
    with _REGISTRY_LOCK:
        return dict(_CONTROLLERS)
