"""Chroma clients of one path opened at once in one process: each opens, none breaks another.

Chroma keeps the clients of one path on one shared system, in a registry it fills without a
lock. Two runs of a graph whose agent memories opened at the same moment (``asyncio.gather``
of runs with ``context={"memory": "lexical"}`` and ``{"memory": "minilm"}``, each memory
opening on its own thread) failed one of them with Chroma's ``KeyError``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from multiagent.persistence._chroma_open import close_persistent_client
from multiagent.persistence.memory import open_chroma_client

OPENERS = 6
ROUNDS = 4


def _open_at_once(path: Path) -> tuple[list[Any], list[BaseException]]:
    """Open ``OPENERS`` clients of ``path`` from as many threads released together."""
    barrier = threading.Barrier(OPENERS)
    clients: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            clients.append(open_chroma_client(path))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients, errors


def test_clients_of_one_path_opened_at_once_all_open_and_work(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        path = tmp_path / f"chroma-{round_}"
        clients, errors = _open_at_once(path)
        assert errors == []
        assert len(clients) == OPENERS
        clients[0].get_or_create_collection("probe").add(ids=["a"], embeddings=[[0.1, 0.2]])
        assert all(c.get_collection("probe").count() == 1 for c in clients)  # one store
        for client in clients:
            close_persistent_client(client)
