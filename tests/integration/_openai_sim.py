"""The simulator server on loopback with the ``openai`` provider's environment pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from multiagent.sim import SimServerConfig, run_sim_server


@contextmanager
def openai_sim(monkeypatch: pytest.MonkeyPatch, config: SimServerConfig) -> Iterator[str]:
    """Serve ``config``; ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` name it meanwhile.

    Yields:
        The OpenAI base URL (``http://127.0.0.1:PORT/v1``).
    """
    with run_sim_server(config) as url:
        monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        yield url
