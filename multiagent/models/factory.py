"""Build the chat model for a tier of work: the simulated model or ``ChatOpenAI``.

Provider clients are built with their own retries off: the project's pipeline owns the one retry
loop (:mod:`multiagent.models`), so a 429 is never retried twice over.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from multiagent.errors import ConfigError
from multiagent.models.simulated import SimulatedChatModel
from multiagent.policies import Settings, Tier


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
    if settings.provider == "sim":
        sim = settings.sim
        return SimulatedChatModel(
            model=name,
            seed=sim.seed,
            ttft_s=sim.ttft_s,
            token_latency_s=sim.token_latency_s,
            rate_limit_error_rate=sim.rate_limit_error_rate,
            server_error_rate=sim.server_error_rate,
            timeout_rate=sim.timeout_rate,
            retry_after_s=sim.retry_after_s,
            fault_seed=sim.seed,
        )
    if settings.openai_api_key is None:
        raise ConfigError(
            "provider 'openai' needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible "
            "server); set them, or use MULTIAGENT_PROVIDER=sim"
        )
    from langchain_openai import ChatOpenAI  # imported here: only this provider needs it

    return ChatOpenAI(
        model=name,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=timeout,
        streaming=streaming,
        stream_usage=True,
    )
