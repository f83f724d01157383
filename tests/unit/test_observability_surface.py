"""The observability package's public names, and what importing the metrics store costs."""

from __future__ import annotations

import subprocess
import sys

import multiagent
import multiagent.observability as observability


def test_every_public_name_resolves() -> None:
    assert observability.__all__ == sorted(observability.__all__)
    for name in observability.__all__:
        assert getattr(observability, name) is not None
    for name in ("MetricsHistory", "persist_metrics", "run_metrics_server", "run_config"):
        assert getattr(multiagent, name) is getattr(observability, name)


def test_the_metrics_store_does_not_load_the_server_or_the_tracing_sdk() -> None:
    probe = (
        "import sys, multiagent._metrics\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'opentelemetry.sdk.trace') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
