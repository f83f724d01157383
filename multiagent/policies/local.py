"""What the ``local`` provider changes in a profile: one small model on this machine, free.

Applied as a layer after the cost policy and before files, environment and flags, so any of
these can still be configured. The model runs in this process: its price is 0 (listed, so its
calls are budgeted like any other), one generation at a time (llama.cpp already uses every
core), inside the context llama.cpp allocates, and with outputs short enough for a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiagent.policies.settings import Settings

#: The name of the packaged SmolLM2-135M-Instruct in settings, ledgers and prices.
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
#: llama.cpp's context for the local model (its server's default too).
LOCAL_CONTEXT_TOKENS = 4096
#: Output bounds by node: about 6 s of generation each at 40 tokens/s on two cores.
LOCAL_MAX_OUTPUT_TOKENS: dict[str, int] = {
    "default": 256,
    "plan": 192,
    "work": 256,
    "speak": 192,
    "moderate": 128,
    "summarize": 256,
    "synthesize": 320,
    "validate": 128,
}


def for_local_provider(data: dict[str, Any]) -> dict[str, Any]:
    """Profile data (as ``Profile.model_dump``) adjusted for the ``local`` provider."""
    out = copy.deepcopy(data)
    models = out["models"]
    for tier in ("fast", "standard", "premium"):
        models[tier] = LOCAL_MODEL_NAME
    models["context_window_tokens"] = LOCAL_CONTEXT_TOKENS
    models["max_output_tokens"] = dict(LOCAL_MAX_OUTPUT_TOKENS)
    out["prices"] = {
        **out.get("prices", {}),
        LOCAL_MODEL_NAME: {"input_per_mtok": 0.0, "output_per_mtok": 0.0},
    }
    out["rate_limit"] = {**out["rate_limit"], "max_concurrency": 1}
    return out


def local_settings(settings: Settings, *, names: Iterable[str], with_layer: bool) -> Settings:
    """Settings for models the ``local`` provider runs (``--model local:PATH.gguf``).

    Every model of ``names`` without a listed price is priced 0: a GGUF file on this machine
    costs nothing per token, whatever its name. With ``with_layer`` (the provider came from
    ``--model``: the settings were loaded for another one), the rest of the local layer applies
    too: one generation at a time, llama.cpp's window, short outputs.
    """
    data = settings.profile.model_dump(mode="python")
    if with_layer:
        data = for_local_provider(data)
    prices = data["prices"]
    for name in names:
        prices.setdefault(name, {"input_per_mtok": 0.0, "output_per_mtok": 0.0})
    profile = type(settings.profile).model_validate(data)
    return settings.model_copy(update={"provider": "local", "profile": profile})


__all__ = [
    "LOCAL_CONTEXT_TOKENS",
    "LOCAL_MAX_OUTPUT_TOKENS",
    "LOCAL_MODEL_NAME",
    "for_local_provider",
    "local_settings",
]
