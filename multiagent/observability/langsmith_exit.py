"""LangSmith's runs at exit: a few seconds at most, and one line when they did not arrive.

LangSmith's client sends runs from a background thread that the process's exit waits for (it is
not a daemon unless ``LANGSMITH_USE_DAEMON`` says so), and ``Client.flush()`` waits without a
bound. So an endpoint that accepted connections and never answered held a three-second command
at exit for minutes (each send waits 60 s for an answer, and is retried), one that refused them
cost it ten seconds, and every failed send printed the client's warning, several lines long,
with the request's headers. As for the OTLP exporters (:mod:`multiagent._otlp`):

- :func:`send_from_daemons` (``configure_tracing`` calls it, before a client exists) has the
  clients made from then on send from daemon threads, unless ``LANGSMITH_USE_DAEMON`` is set:
  the exit then waits for them only as long as :func:`flush_within` does.
- :func:`flush_within` gives the clients' queues one deadline (3 s, :data:`~multiagent._otlp.
  EXIT_WAIT_S`); what is still queued then is given up, and said in one line.
- A failed send is said once per endpoint, in one line; the client's own warnings for failed
  sends are dropped (they say the same again, batch after batch).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence

from langsmith import Client
from langsmith import utils as ls_utils

_report_logger = logging.getLogger("multiagent.telemetry")
#: The logger LangSmith's client (and its senders) report failed sends on, and how they begin.
_CLIENT_LOGGER = "langsmith.client"
_SEND_FAILURES = (
    "Failed to get info from ",
    "Failed to batch ingest runs",
    "Failed to multipart ingest runs",
    "Failed to send compressed multipart ingest",
)
_URL = re.compile(r"https?://[\w.\-\[\]]+(?::\d+)?")  # an endpoint's origin

_lock = threading.Lock()
_said: set[str] = set()  # endpoints a line has been written for
_installed = False


def send_from_daemons() -> None:
    """Have LangSmith clients made from now on send from daemon threads (unless the
    environment chose), and say failed sends once per endpoint."""
    global _installed
    if not any(f"{space}_USE_DAEMON" in os.environ for space in ("LANGSMITH", "LANGCHAIN")):
        os.environ["LANGSMITH_USE_DAEMON"] = "true"
        forget = getattr(ls_utils.get_env_var, "cache_clear", None)  # LangSmith caches reads
        if forget is not None:
            forget()
    with _lock:
        first, _installed = not _installed, True
    if first:
        logging.getLogger(_CLIENT_LOGGER).addFilter(_no_compression_guess)
        logging.getLogger(_CLIENT_LOGGER).addFilter(_once_per_endpoint)


def _no_compression_guess(record: logging.LogRecord) -> bool:
    """Drop the advice to update LangSmith that its client gives when it could not ask the
    endpoint what it supports (the failed send was said)."""
    with _lock:
        failed = bool(_said)
    return not (failed and record.getMessage().startswith("Run compression is not enabled"))


def _once_per_endpoint(record: logging.LogRecord) -> bool:
    """Turn the first failed send to an endpoint into one line; drop the others."""
    message = record.getMessage()
    if not message.startswith(_SEND_FAILURES):
        return True
    found = _URL.search(message)
    endpoint = found.group(0) if found else "LangSmith"
    with _lock:
        if endpoint in _said:
            return False
        _said.add(endpoint)
    reason = message.splitlines()[0]
    record.msg = (
        "multiagent: LangSmith runs not delivered to %s (the endpoint is down, too slow or "
        "refused them; not said again): %s"
    )
    record.args = (endpoint, reason if len(reason) <= 200 else reason[:199] + "…")
    return True


def flush_within(clients: Sequence[Client], wait_s: float) -> None:
    """Wait at most ``wait_s`` seconds for ``clients`` to send what they hold, then say in one
    line per endpoint (unless a failed send said it already) what is still queued."""
    if not clients:
        return

    def flush() -> None:
        for client in clients:
            client.flush()

    flusher = threading.Thread(
        target=flush,
        name="multiagent-langsmith-flush",
        daemon=True,  # given up with the process when the endpoint does not answer
    )
    flusher.start()
    flusher.join(wait_s)
    for client in clients:
        queue = getattr(client, "tracing_queue", None)
        left = int(getattr(queue, "unfinished_tasks", 0) or 0)
        if not left:
            continue
        found = _URL.search(str(client.api_url))
        endpoint = found.group(0) if found else str(client.api_url)
        with _lock:
            if endpoint in _said:
                continue
            _said.add(endpoint)
        _report_logger.warning(
            "multiagent: LangSmith runs not delivered (the endpoint is down, too slow or refused "
            "them; waited at most %g s at exit): %d run update%s to %s",
            wait_s,
            left,
            "" if left == 1 else "s",
            endpoint,
        )
