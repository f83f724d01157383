"""Tracing: every run is one trace, named, tagged and with metadata, in LangSmith or OpenTelemetry.

- :func:`run_config` gives the ``RunnableConfig`` pieces of one run (``run_name``, ``tags``,
  ``metadata``, ``callbacks``). LangSmith reads the first three natively when
  ``LANGSMITH_TRACING=true``; the callbacks hold the OpenTelemetry bridge
  (:class:`~multiagent.observability.otel.OpenTelemetryCallbackHandler`) once
  :func:`configure_tracing` set one up.
- :func:`configure_tracing` builds an OpenTelemetry SDK tracer provider: spans go to an OTLP
  endpoint when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, to the
  exporter a caller passes (tests: ``InMemorySpanExporter``), else nowhere and no handler is
  added. The ``OTEL_*`` / ``LANGSMITH_*`` variables are read here, once, with pydantic-settings.
- :func:`shutdown_tracing` gives LangSmith's runs, then the spans left, at most a few seconds
  each to arrive (:mod:`~multiagent.observability.langsmith_exit`,
  :func:`~multiagent._otlp.close_within`); an endpoint or collector that is down does not hold
  a command's exit for the clients' retries, and what was not delivered is said in one line.
"""

from __future__ import annotations

import atexit
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables.config import ensure_config, merge_configs
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from multiagent._otlp import (
    EXIT_WAIT_S,
    Delivery,
    close_within,
    exit_wait_s,
    otlp_endpoint,
    otlp_protocol,
)
from multiagent.errors import UsageError
from multiagent.observability.otel import OpenTelemetryCallbackHandler
from multiagent.policies import Settings

TRACER_NAME = "multiagent"


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class TracingEnvironment(BaseSettings):
    """The tracing variables of the process environment (standard OpenTelemetry and LangSmith
    names)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    otlp_endpoint: str | None = _alias("OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: str | None = _alias("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otlp_traces_protocol: str | None = _alias("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    otlp_protocol: str | None = _alias("OTEL_EXPORTER_OTLP_PROTOCOL")
    otlp_traces_timeout: str | None = _alias("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
    otlp_timeout: str | None = _alias("OTEL_EXPORTER_OTLP_TIMEOUT")
    traces_exporter: str | None = _alias("OTEL_TRACES_EXPORTER")
    service_name: str | None = _alias("OTEL_SERVICE_NAME")
    langsmith_tracing: str | None = _alias("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2")
    langsmith_project: str | None = _alias("LANGSMITH_PROJECT", "LANGCHAIN_PROJECT")

    @property
    def langsmith(self) -> bool:
        """Whether LangChain sends runs to LangSmith."""
        return (self.langsmith_tracing or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Tracing:
    """The tracing set-up of a process: where spans go, if anywhere."""

    provider: TracerProvider | None
    exporter: str
    endpoint: str | None
    langsmith: bool
    langsmith_project: str | None
    #: Shuts the provider down (bounded when spans go to a collector).
    close: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def handler(self, settings: Settings) -> OpenTelemetryCallbackHandler | None:
        """A callback handler for one run, or ``None`` when spans go nowhere."""
        if self.provider is None:
            return None
        tracer = self.provider.get_tracer(TRACER_NAME)
        return OpenTelemetryCallbackHandler(tracer, price_of=settings.profile.price_of)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "opentelemetry": self.exporter,
            "endpoint": self.endpoint,
            "langsmith": self.langsmith,
            "langsmith_project": self.langsmith_project,
        }


_ACTIVE: Tracing | None = None
_ACTIVE_LOCK = threading.Lock()


class _DeliveredSpans(SpanExporter):
    """An OTLP span exporter whose exports a :class:`~multiagent._otlp.Delivery` accounts."""

    def __init__(self, exporter: SpanExporter, delivery: Delivery) -> None:
        self._exporter = exporter
        self._delivery = delivery
        self._stopped = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the OTLP exporter; nothing once it is shut down."""
        with self._delivery.exporting(len(spans)) as outcome:
            if self._stopped.is_set():  # a failed export, counted
                return SpanExportResult.FAILURE
            result = self._exporter.export(spans)
            outcome[0] = result is SpanExportResult.SUCCESS
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """The OTLP exporter's flush."""
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Shut the OTLP exporter down once (interrupting its retries)."""
        if not self._stopped.is_set():
            self._stopped.set()
            self._exporter.shutdown()


class _CountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, each span it queues given to a delivery."""

    def __init__(self, exporter: _DeliveredSpans, delivery: Delivery) -> None:
        super().__init__(exporter)
        self._delivery = delivery

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span (the SDK drops the others) and count it."""
        if span.context is not None and span.context.trace_flags.sampled:
            self._delivery.give()
        super().on_end(span)


def _otlp_provider(env: TracingEnvironment, resource: Resource) -> Tracing:
    """A provider exporting to the OTLP endpoint, closed within a few seconds."""
    protocol = otlp_protocol(
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.otlp_traces_protocol),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", env.otlp_protocol),
    )
    endpoint = otlp_endpoint(
        protocol,
        specific=env.otlp_traces_endpoint,
        general=str(env.otlp_endpoint),
        path="/v1/traces",
    )
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        exporter, kind = GrpcExporter(endpoint=endpoint), "otlp-grpc"
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        exporter, kind = HttpExporter(endpoint=endpoint), "otlp-http"
    delivery = Delivery(
        what="spans",
        endpoint=endpoint,
        wait_s=exit_wait_s(env.otlp_traces_timeout, env.otlp_timeout),
    )
    delivered = _DeliveredSpans(exporter, delivery)
    # shut down by shutdown_tracing, at exit too (below), not by the SDK's unbounded exit hook
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(_CountedBatchSpanProcessor(delivered, delivery))

    def close() -> None:
        close_within(delivery, provider.shutdown, stop=delivered.shutdown)

    return Tracing(provider, kind, endpoint, env.langsmith, env.langsmith_project, close)


def configure_tracing(
    settings: Settings,
    *,
    exporter: SpanExporter | None = None,
    environment: TracingEnvironment | None = None,
) -> Tracing:
    """Set up this process's tracing; :func:`run_config` uses it from then on.

    A provider set up before is flushed and shut down first. The global OpenTelemetry provider
    is not replaced: spans go through this module's provider only. The process's metrics are
    tied to the history of ``settings.home`` too (:func:`~multiagent.observability.history.
    install_history_sink`): persisted every 5 minutes and at exit.

    Args:
        settings: Resolved settings (profile, policy and provider become resource attributes).
        exporter: Send spans here, synchronously (tests, notebooks); wins over OTLP.
        environment: The tracing variables; default: read from the process environment.

    Returns:
        The active set-up.

    Raises:
        ConfigError: ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` is not ``http/protobuf`` or
            ``grpc``.
    """
    from multiagent.observability.history import install_history_sink
    from multiagent.observability.langsmith_exit import send_from_daemons

    install_history_sink(settings)
    send_from_daemons()  # before a LangSmith client exists: its exit is bounded then
    env = environment or TracingEnvironment()
    resource = Resource.create(
        {
            "service.name": env.service_name or "multiagent",
            "multiagent.profile": settings.env,
            "multiagent.policy": settings.policy,
            "multiagent.provider": settings.provider,
        }
    )
    disabled = (env.traces_exporter or "").strip().lower() == "none"
    if exporter is not None:
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(
            provider, "custom", None, env.langsmith, env.langsmith_project, provider.shutdown
        )
    elif (env.otlp_endpoint or env.otlp_traces_endpoint) and not disabled:
        tracing = _otlp_provider(env, resource)
    else:
        tracing = Tracing(None, "none", None, env.langsmith, env.langsmith_project)
    global _ACTIVE
    with _ACTIVE_LOCK:
        previous, _ACTIVE = _ACTIVE, tracing
    if previous is not None and previous.close is not None:
        previous.close()
    # LangSmith's senders are daemons now, and an OTLP provider is not shut down by the SDK
    _shut_down_at_exit()
    return tracing


_AT_EXIT = threading.Event()


def _shut_down_at_exit() -> None:
    """Have the process's exit flush LangSmith's runs and shut an OTLP provider down (both
    bounded) if no one did before."""
    if not _AT_EXIT.is_set():
        _AT_EXIT.set()
        atexit.register(shutdown_tracing)


def active_tracing() -> Tracing | None:
    """The set-up :func:`configure_tracing` made, or ``None``."""
    return _ACTIVE


def shutdown_tracing() -> None:
    """Flush pending spans and LangSmith runs, and stop exporting (call before a short process
    exits: LangChain sends runs to LangSmith from a background thread).

    LangSmith's runs get at most 3 s (:func:`~multiagent.observability.langsmith_exit.
    flush_within`), then spans bound for an OTLP collector at most as long (or the exporter's
    timeout if shorter); what did not arrive is said in one line per destination.
    """
    global _ACTIVE
    with _ACTIVE_LOCK:
        previous, _ACTIVE = _ACTIVE, None
    if previous is not None:
        from multiagent.observability.langsmith_exit import flush_within
        from multiagent.observability.langsmith_redaction import langsmith_clients

        # also with LangSmith off here: a tracer the caller passed traces through a redacting
        # twin of its client, which has runs to send all the same
        flush_within(langsmith_clients(), EXIT_WAIT_S)
    if previous is not None and previous.close is not None:
        # exports what is left; to a collector that is down for a few seconds at most
        previous.close()


def run_config(
    *,
    workflow: str,
    settings: Settings,
    thread_id: str,
    correlation_id: str | None = None,
    agents: Sequence[str] = (),
    live: bool = True,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """The ``RunnableConfig`` pieces that make one run one findable trace.

    Merge the result into the run's config (``langchain_core.runnables.config.merge_configs``
    unions tags, merges metadata and appends callbacks).

    Args:
        workflow: The workflow's name (``orchestration``, ``meeting``, ``validation``...).
        settings: Resolved settings (profile, policy, provider).
        thread_id: The run's thread.
        correlation_id: Ties the trace to logs and other systems; a new UUID when ``None``.
        agents: The run's agents (each tagged ``agent:<name>`` on the root run; model calls
            carry their own agent in their metadata).
        live: Add a :class:`~multiagent.observability.live_recorder.LiveRunRecorder`, so the
            run shows on the dashboard of any process reading the same data directory.
        budget_usd: The run's budget the dashboard counts down from (``--budget``); default:
            the profile's ``budget_usd``.

    Returns:
        ``{"run_name", "tags", "metadata", "callbacks"}``; ``callbacks`` holds the
        OpenTelemetry handler when :func:`configure_tracing` set up an exporter, and the live
        recorder unless ``live`` is false.

    Raises:
        UsageError: ``workflow`` or ``thread_id`` is empty.
    """
    if not workflow.strip() or not thread_id.strip():
        raise UsageError(
            f"a traced run needs a workflow and a thread id, got {workflow!r}, {thread_id!r}"
        )
    correlation = correlation_id or uuid.uuid4().hex
    tracing = _ACTIVE
    handler = tracing.handler(settings) if tracing is not None else None
    return {
        **_run_pieces(workflow, settings, thread_id, correlation, agents),
        "callbacks": [
            *([handler] if handler is not None else []),
            *([_live_recorder(settings, workflow, thread_id, budget_usd)] if live else []),
        ],
    }


def _run_pieces(
    workflow: str,
    settings: Settings,
    thread_id: str | None,
    correlation: str,
    agents: Sequence[str] = (),
) -> dict[str, Any]:
    """The run's name, tags and metadata (no ``thread_id`` for a run without a thread)."""
    return {
        "run_name": f"multiagent.{workflow}",
        "tags": [
            "multiagent",
            f"workflow:{workflow}",
            f"profile:{settings.env}",
            f"policy:{settings.policy}",
            f"provider:{settings.provider}",
            *(f"agent:{name}" for name in agents),
        ],
        "metadata": {
            "workflow": workflow,
            "profile": settings.env,
            "policy": settings.policy,
            "provider": settings.provider,
            **({"thread_id": thread_id} if thread_id else {}),
            "correlation_id": correlation,
            **({"agents": ",".join(agents)} if agents else {}),
        },
    }


def untraced_run(config: Any) -> Tracing | None:
    """The active set-up when a run with ``config`` is traced but not yet named, tagged and
    given its metadata, else ``None``: when the set-up exports spans, a run with no
    OpenTelemetry handler yet (none the caller passed, nor an enclosing run's); when it sends
    runs to LangSmith alone (LangGraph Server without an OTLP endpoint), a run whose metadata
    names no workflow (no :func:`run_config`, no enclosing workflow run).

    The check every run of a workflow graph makes (:class:`~multiagent.graphs.redacting.
    RedactingGraph`): with no tracing configured it reads one global and returns.
    """
    tracing = _ACTIVE
    if tracing is None:
        return None
    if tracing.provider is None:
        if not tracing.langsmith or "workflow" in ensure_config(config)["metadata"]:
            return None
        return tracing
    callbacks = ensure_config(config).get("callbacks")
    handlers = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else callbacks
    if any(isinstance(handler, OpenTelemetryCallbackHandler) for handler in handlers or ()):
        return None
    return tracing


def trace_run(config: Any, *, tracing: Tracing, workflow: str, settings: Settings) -> Any:
    """``config`` made one trace of ``tracing``, as :func:`run_config` makes a CLI run's.

    For a run its caller did not trace (:func:`untraced_run`), such as a LangGraph Server run:
    the OpenTelemetry handler is added (when spans are exported), with the run's name
    (``multiagent.<workflow>``, unless the caller named it), tags and metadata. What the
    caller's metadata (or an enclosing run's) already says wins; the correlation id is the
    run's id when it has one (the server's run id), the thread id the one in ``configurable``.
    No live recorder: LangGraph Server's app adds one to its runs
    (:mod:`multiagent.graphs.server_app`).
    """
    given = ensure_config(config)
    thread_id = given["configurable"].get("thread_id")
    run_id = given.get("run_id")
    correlation = str(given["metadata"].get("correlation_id") or run_id or uuid.uuid4().hex)
    pieces = _run_pieces(workflow, settings, str(thread_id) if thread_id else None, correlation)
    handler = tracing.handler(settings)
    extra: dict[str, Any] = {
        "tags": pieces["tags"],
        "metadata": {k: v for k, v in pieces["metadata"].items() if k not in given["metadata"]},
        "callbacks": [handler] if handler is not None else [],
    }
    if not given.get("run_name"):
        extra["run_name"] = pieces["run_name"]
    return merge_configs(config, extra)  # type: ignore[arg-type]


def _live_recorder(
    settings: Settings, workflow: str, thread_id: str, budget_usd: float | None
) -> Any:
    from multiagent.observability.live_recorder import LiveRunRecorder

    return LiveRunRecorder(
        settings.home,
        thread_id=thread_id,
        workflow=workflow,
        budget_usd=settings.profile.budget_usd if budget_usd is None else budget_usd,
    )
