"""Build the chat model for a tier of work: the simulated model or ``ChatOpenAI``.

Providers are resolved by name from :data:`PROVIDERS`, each an import path, the way LangChain's
``init_chat_model`` resolves its providers: the simulated provider lives with the simulator
(:mod:`multiagent.sim.model`) and nothing in :mod:`multiagent.models` imports it.

Provider clients are built with their own retries off: the project's pipeline owns the one retry
loop (:mod:`multiagent.models`), so a 429 is never retried twice over.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel

from multiagent.errors import ConfigError
from multiagent.policies import Settings, Tier

#: Provider name → ``module:function`` building its chat model from (model name, settings).
PROVIDERS: dict[str, str] = {
    "sim": "multiagent.sim.model:build_simulated_model",
    # llama.cpp in process; imports llama_cpp only when a model is built
    "local": "multiagent.models.local:build_local_model",
}


def _provider_factory(provider: str) -> Callable[[str, Settings], BaseChatModel]:
    """The factory registered for ``provider``."""
    path = PROVIDERS.get(provider)
    if path is None:
        valid = ", ".join(sorted([*PROVIDERS, "openai"]))
        raise ConfigError(f"unknown provider {provider!r}; valid: {valid}")
    module, _, name = path.partition(":")
    factory: Callable[[str, Settings], BaseChatModel] = getattr(
        importlib.import_module(module), name
    )
    return factory


def build_chat_model(
    tier: Tier,
    settings: Settings,
    *,
    model: str | None = None,
    streaming: bool = False,
) -> BaseChatModel:
    """Return the provider's chat model for ``tier`` as the profile configures it.

    Args:
        tier: ``"fast"``, ``"standard"`` or ``"premium"``.
        settings: Resolved settings (see :func:`multiagent.load_settings`).
        model: A model name that replaces the profile's choice for the tier.
        streaming: Ask the provider to stream when the model is invoked (OpenAI only).

    Raises:
        ConfigError: The ``openai`` provider is selected and ``OPENAI_API_KEY`` is not set.
    """
    name = model or settings.profile.models.for_tier(tier)
    timeout = settings.profile.rate_limit.request_timeout_s
    if settings.provider != "openai":
        return _provider_factory(settings.provider)(name, settings)
    if settings.openai_api_key is None:
        raise ConfigError(
            "provider 'openai' needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible "
            "server); set them, or use MULTIAGENT_PROVIDER=sim"
        )
    from langchain_openai import ChatOpenAI  # imported here: only this provider needs it

    from multiagent.models.openai_compat import CompatibleChatOpenAI

    # a compatible server (llama.cpp's) reads the output bound only as max_tokens
    openai_class = ChatOpenAI if settings.openai_base_url is None else CompatibleChatOpenAI
    return openai_class(
        model=name,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=timeout,
        streaming=streaming,
        stream_usage=True,
    )
