"""OTLP export rules shared by spans and metrics: the protocol, the endpoint, a bounded close.

- :func:`otlp_protocol` is the one rule for ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL``:
  ``http/protobuf`` (the default) or ``grpc``; any other value is a
  :class:`~multiagent.errors.ConfigError` naming the value and its variable.
- :class:`Delivery` keeps what one exporter was given and delivered. :func:`close_within` gives
  a provider's (or reader's) shutdown, which exports what is left, at most :func:`exit_wait_s`
  seconds, then shuts the exporter down, which interrupts the OTLP exporters' retries; a
  collector that is down then costs a command a few seconds at exit, not the exporter's 10 s
  retry deadline per signal. What was not delivered is reported once, at exit, as one line on
  the ``multiagent.telemetry`` logger (stderr unless logging is configured), and the exporters'
  retry warnings for those exports are dropped (the line says the same once).

Imports nothing of ours but the errors (the metrics API at the bottom uses it).
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from multiagent.errors import ConfigError

PROTOCOLS = ("http/protobuf", "grpc")
#: The longest a close waits for a collector, seconds. A healthy collector takes a batch in
#: milliseconds (a remote one with a fresh TLS handshake well under a second); 3 s also lets
#: the exporter retry once after its first backoff (about 1 s), while a collector that is down
#: delays a command's exit by no more than that. A shorter exporter timeout
#: (``OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT``) shortens it: no close waits longer than one export
#: is allowed to take.
EXIT_WAIT_S = 3.0
_DEFAULT_EXPORT_TIMEOUT_S = 10.0  # the OTLP exporters' own default

_report_logger = logging.getLogger("multiagent.telemetry")
#: The loggers the OTLP exporters report retries on.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)


def otlp_protocol(*candidates: tuple[str, str | None]) -> str:
    """The protocol the first set variable names, ``http/protobuf`` when none is set.

    Args:
        candidates: ``(variable, value)`` pairs, the most specific first
            (``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``).

    Raises:
        ConfigError: The value is neither ``http/protobuf`` nor ``grpc``.
    """
    for variable, value in candidates:
        if value is None or not value.strip():  # empty means unset, as for the SDK
            continue
        protocol = value.strip().lower()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"unknown OTLP protocol {value!r} (from {variable}); valid: {', '.join(PROTOCOLS)}"
            )
        return protocol
    return PROTOCOLS[0]


def otlp_endpoint(protocol: str, *, specific: str | None, general: str, path: str) -> str:
    """Where a signal goes: its own endpoint as given, else the general one (plus ``path``,
    ``/v1/traces`` or ``/v1/metrics``, over HTTP), as the OpenTelemetry variables define."""
    if specific:
        return specific
    return general if protocol == "grpc" else f"{general.rstrip('/')}{path}"


def exit_wait_s(*timeouts: str | None) -> float:
    """How long a close waits: :data:`EXIT_WAIT_S`, or the exporter's timeout if shorter.

    Args:
        timeouts: The values of the signal's and the general ``..._TIMEOUT`` variables
            (seconds), the most specific first. The first one set counts, as for the
            exporters; one that is not a positive number means their default (10 s).
    """
    raw = next((value for value in timeouts if value), None)
    try:
        seconds = float(raw) if raw is not None else _DEFAULT_EXPORT_TIMEOUT_S
    except ValueError:
        seconds = _DEFAULT_EXPORT_TIMEOUT_S
    if not (math.isfinite(seconds) and seconds > 0):
        seconds = _DEFAULT_EXPORT_TIMEOUT_S
    return min(EXIT_WAIT_S, seconds)


class Delivery:
    """What one OTLP exporter was given and delivered, for the report at exit.

    Spans count one by one (:meth:`give` when the SDK queues one). Metrics are cumulative, so
    each export carries every total: they are lost when the last export failed or had not
    finished when the exporter was shut down.

    Args:
        what: ``"spans"`` (counted) or ``"metrics"``.
        endpoint: Where the exporter sends them.
        wait_s: The longest :func:`close_within` waits.
    """

    def __init__(self, *, what: str, endpoint: str, wait_s: float) -> None:
        self.what = what
        self.endpoint = endpoint
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._given = self._delivered = self._in_flight = 0
        self._last_failed = False
        self.closing = False
        _register(self)

    def give(self, count: int = 1) -> None:
        """``count`` items were queued for export."""
        with self._lock:
            self._given += count

    @contextmanager
    def exporting(self, count: int) -> Iterator[list[bool]]:
        """Account one export of ``count`` items; set ``outcome[0] = True`` when it succeeded.

        The exporter's retry warnings on this thread are dropped once the close has begun.
        """
        outcome = [False]
        with self._lock:
            self._in_flight += 1
        previous = getattr(_exporting, "delivery", None)
        _exporting.delivery = self
        try:
            yield outcome
        finally:
            _exporting.delivery = previous
            with self._lock:
                self._in_flight -= 1
                self._last_failed = not outcome[0]
                if outcome[0]:
                    self._delivered += count
            if outcome[0]:
                _unreachable.discard(_origin(self.endpoint))

    def lost(self) -> str | None:
        """What did not reach the collector (``"12 spans"``, ``"the final metrics"``), or
        ``None``."""
        with self._lock:
            if self.what == "spans":
                missing = self._given - self._delivered
                return f"{missing} span{'s' if missing != 1 else ''}" if missing > 0 else None
            return "the final metrics" if self._last_failed or self._in_flight else None


def close_within(
    delivery: Delivery, shutdown: Callable[[], object], *, stop: Callable[[], object]
) -> None:
    """Run ``shutdown`` (which exports what is left) for at most ``delivery.wait_s`` seconds,
    then ``stop`` the exporter: its shutdown interrupts the retries of an export under way.

    A collector that already failed to take a close's telemetry, with no export to it
    succeeding since, is not tried again: ``stop`` runs first (traces and metrics of one
    collector cost one wait, not two). A healthy collector gets every item: ``stop`` only runs
    when time is up.
    """
    origin = _origin(delivery.endpoint)
    delivery.closing = True
    if origin in _unreachable:
        stop()  # what is left fails at once (and is counted), without a connection attempt
    closer = threading.Thread(target=shutdown, name="multiagent-otlp-close", daemon=True)
    closer.start()
    closer.join(delivery.wait_s)
    if closer.is_alive():
        # an export still under way (retrying, or a request that hangs) is given up; its thread
        # is a daemon and ends with the process or when the request does
        stop()
    if delivery.lost() is None:
        with _deliveries_lock:  # delivered: nothing to report (a long process closes many)
            _deliveries.remove(delivery)
    else:
        _unreachable.add(origin)


#: Origins (scheme, host, port) of collectors whose last close failed.
_unreachable: set[str] = set()
_exporting = threading.local()
_deliveries: list[Delivery] = []
_deliveries_lock = threading.Lock()
_installed = False  # the log filter and the exit report, once per process


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    return f"{parts.scheme}://{parts.netloc}"


def _register(delivery: Delivery) -> None:
    global _installed
    with _deliveries_lock:
        first, _installed = not _installed, True
        _deliveries.append(delivery)
    if first:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(_drop_retry_noise)
        # the metrics' OTLP delivery is made before its meter provider registers its own exit
        # shutdown (and the spans' after the metrics store exists), so this runs after both:
        # exit handlers run last registered first
        atexit.register(report_undelivered)


def report_undelivered() -> None:
    """Log, as one line, what the process's OTLP exporters could not deliver (nothing when all
    was delivered); runs at exit."""
    with _deliveries_lock:
        deliveries = list(_deliveries)
    lost = [(d.lost(), d) for d in sorted(deliveries, key=lambda d: d.what != "spans")]
    parts = [f"{what} to {d.endpoint}" for what, d in lost if what is not None]
    if parts:
        wait = max(d.wait_s for what, d in lost if what is not None)
        _report_logger.warning(
            "multiagent: OTLP telemetry not delivered (the collector is down, too slow or "
            "refused it; waited at most %g s at exit): %s",
            wait,
            ", ".join(parts),
        )


def _drop_retry_noise(record: logging.LogRecord) -> bool:
    """Keep a record unless it is a retry (or its end) of an export whose close has begun."""
    delivery: Delivery | None = getattr(_exporting, "delivery", None)
    if delivery is None or not delivery.closing:
        return True
    message = str(record.msg)
    if message.startswith(("Transient error ", "Shutdown in progress, aborting retry")):
        return False
    if message.startswith("Failed to export %s batch due to timeout, max retries or shutdown"):
        return False
    # gRPC ends a retried export with the same message as any failure: only a retryable code
    # is the unreachable collector the report names
    return not (
        message.startswith("Failed to export %s to %s, error code")
        and isinstance(record.args, tuple)
        and len(record.args) > 2
        and str(record.args[2]).endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))
    )
