"""Build the chat model for a tier of work: the simulated model, ``ChatOpenAI``, or any chat model.

Providers are resolved by name from :data:`PROVIDERS`, each an import path, the way LangChain's
``init_chat_model`` resolves its providers: the simulated provider lives with the simulator
(:mod:`multiagent.sim.model`) and nothing in :mod:`multiagent.models` imports it.

Provider clients are built with their own retries off: the project's pipeline owns the one retry
loop (:mod:`multiagent.models.retry`), so a 429 is never retried twice over. A brought model keeps
its client's retries by default (``ChatOpenAI``'s SDK client retries twice): under the pipeline's
three attempts one failing call would be up to nine requests, and the adaptive limiter would see
only the last error of each attempt. So the pipeline calls a copy with the client's retries off
(:func:`without_client_retries`, also inside ``.bind``/``.with_fallbacks`` wrappers), and a
``.with_retry()`` wrapper, which would retry every error inside each of the pipeline's attempts,
is refused when the model is chosen, with one line saying what retries instead.

A model brought by the user (:func:`choose_model`) is a LangChain ``BaseChatModel`` instance or an
``init_chat_model`` string ``provider:name``: the project's own providers (``sim``, ``openai``
and those in :data:`PROVIDERS`) build it as they would for a profile; any other provider is
resolved by LangChain's ``init_chat_model`` when the ``langchain`` package is installed, else by
:data:`INTEGRATIONS` (the common integration packages). A missing integration package is a
:class:`~multiagent.errors.ConfigError` naming what to ``pip install``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from multiagent.errors import ConfigError
from multiagent.models._chain_members import (
    chat_models_in,
    retrying_wrapper,
    without_own_retries,
    wrapped_chat_model,
)
from multiagent.models._runnable_model import RunnableChatModel
from multiagent.policies import Settings, Tier
from multiagent.policies.settings import check_openai_base_url

if TYPE_CHECKING:
    import httpx2

    from multiagent.models._in_flight import InFlightGate

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


def check_provider(settings: Settings) -> None:
    """Raise ``ConfigError`` when the profile's provider cannot be built as configured
    (``openai`` without ``OPENAI_API_KEY``, or with a malformed ``OPENAI_BASE_URL``): callers
    check before a run stores anything."""
    if settings.provider != "openai":
        return
    if settings.openai_api_key is None:
        raise ConfigError(
            "provider 'openai' needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible "
            "server); set them, or use MULTIAGENT_PROVIDER=sim"
        )
    if settings.openai_base_url is not None:
        check_openai_base_url(settings.openai_base_url)


def build_chat_model(
    tier: Tier,
    settings: Settings,
    *,
    model: str | None = None,
    streaming: bool = False,
    http_clients: tuple[httpx2.Client, httpx2.AsyncClient] | None = None,
    gate: InFlightGate | None = None,
) -> BaseChatModel:
    """Return the provider's chat model for ``tier`` as the profile configures it.

    Args:
        tier: ``"fast"``, ``"standard"`` or ``"premium"``.
        settings: Resolved settings (see :func:`multiagent.load_settings`).
        model: A model name that replaces the profile's choice for the tier.
        streaming: Ask the provider to stream when the model is invoked (OpenAI only).
        http_clients: The sync and async httpx2 clients an ``openai`` model sends through
            (default: the SDK's own); other providers build their own clients.
        gate: The in-flight bound ``http_clients`` hold around each exchange; the model's
            direct line (:mod:`multiagent.models._openai_direct`) holds it too.

    Raises:
        ConfigError: The ``openai`` provider is selected and ``OPENAI_API_KEY`` is not set.
    """
    name = model or settings.profile.models.for_tier(tier)
    timeout = settings.profile.rate_limit.request_timeout_s
    if settings.provider != "openai":
        return _provider_factory(settings.provider)(name, settings)
    check_provider(settings)
    from langchain_openai import ChatOpenAI  # imported here: only this provider needs it

    from multiagent.models._openai_direct import post_directly
    from multiagent.models.openai_compat import CompatibleChatOpenAI

    # a compatible server (llama.cpp's) reads the output bound only as max_tokens
    openai_class = ChatOpenAI if settings.openai_base_url is None else CompatibleChatOpenAI
    sync_http, async_http = http_clients or (None, None)
    built = openai_class(
        model=name,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=timeout,
        streaming=streaming,
        stream_usage=True,
        http_client=sync_http,
        http_async_client=async_http,
    )
    # the payload is sent as LangChain built it, over a urllib3 pool where it can be
    return post_directly(built, gate=gate)


#: ``init_chat_model`` providers by name → (module, class, pip package), for when LangChain's own
#: ``init_chat_model`` (in the ``langchain`` package) is not installed.
INTEGRATIONS: dict[str, tuple[str, str, str]] = {
    "anthropic": ("langchain_anthropic", "ChatAnthropic", "langchain-anthropic"),
    "ollama": ("langchain_ollama", "ChatOllama", "langchain-ollama"),
    "google_genai": ("langchain_google_genai", "ChatGoogleGenerativeAI", "langchain-google-genai"),
    "mistralai": ("langchain_mistralai", "ChatMistralAI", "langchain-mistralai"),
    "groq": ("langchain_groq", "ChatGroq", "langchain-groq"),
    "fireworks": ("langchain_fireworks", "ChatFireworks", "langchain-fireworks"),
    "together": ("langchain_together", "ChatTogether", "langchain-together"),
    "deepseek": ("langchain_deepseek", "ChatDeepSeek", "langchain-deepseek"),
    "xai": ("langchain_xai", "ChatXAI", "langchain-xai"),
    "huggingface": ("langchain_huggingface", "ChatHuggingFace", "langchain-huggingface"),
    "bedrock_converse": ("langchain_aws", "ChatBedrockConverse", "langchain-aws"),
}


@dataclass(frozen=True)
class ChosenModel:
    """The model every agent calls, whatever the profile's tiers say.

    Attributes:
        provider: The provider name recorded on each call (``sim``, ``openai``, ``anthropic``,
            or a brought model's own ``ls_provider``).
        name: The model name: what calls are recorded, priced and limited under.
        model: The chat model; ``None`` when one of the project's own providers builds it.
        fallbacks: The names of the chat models a brought ``.with_fallbacks()`` wrapper falls
            back to, in order: each must be priced, and answers under its own name.
    """

    provider: str
    name: str
    model: BaseChatModel | None = None
    fallbacks: tuple[str, ...] = ()


def own_providers() -> tuple[str, ...]:
    """Providers the project builds itself (profile settings, key checks, retries off)."""
    return tuple(sorted({*PROVIDERS, "openai"}))


def choose_model(
    spec: BaseChatModel | Runnable[Any, Any] | str, *, source: str = "model"
) -> ChosenModel:
    """Resolve a chat model given as an instance or as ``provider:name``.

    Args:
        spec: A LangChain ``BaseChatModel`` instance (or one wrapped by ``.bind``,
            ``.with_fallbacks``: named after the model tried first, called through the
            wrapper), or an ``init_chat_model`` string
            (``openai:gpt-4o-mini``, ``anthropic:claude-3-5-haiku-latest``, ``ollama:llama3``).
        source: Where the value came from, for error messages (``--model``).

    Raises:
        ConfigError: ``spec`` is neither a chat model nor a string, a wrapper holds
            something else than chat models or is a ``.with_retry()`` one, the string is not
            ``provider:name``, or the provider's integration package is not installed (the
            message names it).
    """
    if isinstance(spec, BaseChatModel):
        return ChosenModel(provider=_provider_name(spec), name=_model_name(spec), model=spec)
    if isinstance(spec, Runnable):
        return _chosen_wrapper(spec, source)
    if not isinstance(spec, str):
        raise ConfigError(
            f"{source} is a {type(spec).__name__}; give a LangChain chat model or a "
            "provider:name string (e.g. openai:gpt-4o-mini)"
        )
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        raise ConfigError(
            f"{source} {spec!r} is not provider:name; e.g. openai:gpt-4o-mini, "
            f"ollama:llama3, sim:gpt-4o-mini"
        )
    if provider in own_providers():
        return ChosenModel(provider=provider, name=name)
    return ChosenModel(provider=provider, name=name, model=_init_chat_model(provider, name, source))


def _chosen_wrapper(spec: Runnable[Any, Any], source: str) -> ChosenModel:
    """A chat model wrapped by ``.bind`` or ``.with_fallbacks``, named after its first member."""
    members = chat_models_in(spec)
    for part in members:
        if not isinstance(part, BaseChatModel):
            held = type(part).__name__
            what = "no chat model" if part is spec else f"a {held}, not a chat model,"
            raise ConfigError(
                f"{source} is a {type(spec).__name__} with {what} inside; give a LangChain "
                "chat model (or one wrapped by .bind, .with_fallbacks)"
            )
    if retrying_wrapper(spec):
        raise ConfigError(
            f"{source} is wrapped by .with_retry(), which would retry inside each of the "
            "pipeline's own attempts (rate_limit.retry_attempts: 429, 5xx, timeouts, with "
            "Retry-After and backoff); drop .with_retry()"
        )
    chat = [part for part in members if isinstance(part, BaseChatModel)]
    named = [(_provider_name(model), _model_name(model)) for model in chat]
    wrapper = RunnableChatModel.wrapping(spec, members=named)
    provider, name = named[0]
    fallbacks = tuple(n for _, n in named[1:])
    return ChosenModel(provider=provider, name=name, model=wrapper, fallbacks=fallbacks)


def _init_chat_model(provider: str, name: str, source: str) -> BaseChatModel:
    """LangChain's ``init_chat_model`` where installed, else the :data:`INTEGRATIONS` table."""
    try:
        init_chat_model: Any = importlib.import_module("langchain.chat_models").init_chat_model
    except ImportError:
        init_chat_model = None
    if init_chat_model is not None:
        try:
            model: BaseChatModel = init_chat_model(name, model_provider=provider)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{source} {provider}:{name}: {' '.join(str(exc).split())}") from None
        return model
    found = INTEGRATIONS.get(provider)
    if found is None:
        valid = ", ".join([*own_providers(), *sorted(INTEGRATIONS)])
        raise ConfigError(f"{source}: unknown provider {provider!r}; valid: {valid}")
    module_name, class_name, package = found
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"{source} {provider}:{name} needs the {package} package: pip install {package}"
        ) from None
    built: BaseChatModel = getattr(module, class_name)(model=name)
    return built


def _provider_name(model: BaseChatModel) -> str:
    """A brought model's provider: its own tracing name (``ls_provider``), else its class."""
    params: dict[str, Any] = dict(model._get_ls_params())
    return str(params.get("ls_provider") or type(model).__name__.lower())


#: Where chat model classes keep the server they send to (``ChatOpenAI``'s ``base_url`` is the
#: field ``openai_api_base``).
_BASE_URL_FIELDS = ("openai_api_base", "base_url", "api_base", "endpoint_url")


def own_base_url(model: BaseChatModel) -> str | None:
    """The server a brought model sends to, as it names it (a wrapper's: the primary's);
    ``None`` when it names none and its client's default applies.

    Controllers are keyed by provider, base URL and model: a ``ChatOpenAI`` brought with the
    ``base_url`` of a vLLM or llama.cpp server is another endpoint than OpenAI's, however its
    model is named, and its 429s pause that server alone.
    """
    if isinstance(model, RunnableChatModel):
        model = wrapped_chat_model(model.runnable) or model
    for field in _BASE_URL_FIELDS:
        value = getattr(model, field, None)
        if isinstance(value, str) and value:
            return value
    return None


def _model_name(model: BaseChatModel) -> str:
    """A brought model's name: ``model_name`` / ``model`` where it has one, else its class."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def without_client_retries(model: BaseChatModel) -> BaseChatModel:
    """A brought model with its client's own retries off, where it has a ``max_retries`` field
    (each chat model inside a wrapper too): the pipeline owns the one retry loop.

    The client is what retries: ``langchain-openai`` builds its OpenAI SDK client from the
    field at construction, so the copy gets a copy of that client with ``max_retries=0`` (see
    :func:`multiagent.models._chain_members.without_own_retries`).
    """
    if isinstance(model, RunnableChatModel):
        return model.without_own_retries()
    return without_own_retries(model)
