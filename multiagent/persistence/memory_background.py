"""Agent memory that opens while the run starts, on a background thread.

Importing Chroma and opening its persistent client cost a few hundred milliseconds, reading
the embedder's weights some tens more. A workflow needs neither before its first agent turn
(the planner neither recalls nor remembers), so :func:`open_agent_memory_in_background`
checks at once what a user can get wrong (the embedder asked for, the data directory) and
leaves the rest to a daemon thread that runs while the graph compiles and the planner's model
call is out; the first ``recall`` or ``remember`` waits for it. With a real provider the
planner's call hides all of it.

The thread starts only once the caller's own imports are done (the CLI builds the context
right before the graph runs), so it does not race the main thread importing the same packages.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Self

from langchain_core.embeddings import Embeddings

from multiagent.persistence.checkpointer import ensure_home
from multiagent.persistence.embeddings import load_embeddings
from multiagent.policies import Settings

if TYPE_CHECKING:
    from multiagent.persistence.memory import ChromaAgentMemory

logger = logging.getLogger("multiagent.persistence.memory")


class BackgroundAgentMemory:
    """:class:`~multiagent.persistence.memory.AgentMemory` whose store opens on a thread.

    Args:
        settings: Resolved settings; memory lives in ``<home>/chroma``.
        embeddings: The embedder (its weights are read on the same thread when it can).
    """

    def __init__(self, settings: Settings, *, embeddings: Embeddings) -> None:
        self.embeddings = embeddings
        self._memory: ChromaAgentMemory | None = None
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(
            target=self._open, args=(settings,), name="agent-memory-open", daemon=True
        )
        self._thread.start()

    def _open(self, settings: Settings) -> None:
        """Open the store and read the embedder; keep what went wrong for the first caller."""
        try:
            from multiagent.persistence.memory import open_agent_memory  # imports Chroma

            self._memory = open_agent_memory(settings, embeddings=self.embeddings)
            load = getattr(self.embeddings, "load", None)
            if callable(load):
                load()
        except BaseException as exc:  # re-raised where memory is used, in the caller's thread
            self._error = exc

    @property
    def opened(self) -> bool:
        """Whether the store is open (the thread has finished without error)."""
        return not self._thread.is_alive() and self._memory is not None

    def wait(self) -> ChromaAgentMemory:
        """The open store, once the thread is done.

        Raises:
            Exception: Whatever opening the store raised.
        """
        self._thread.join()
        if self._error is not None:
            self._raised = True
            raise self._error
        assert self._memory is not None  # the thread either opened it or kept an error
        return self._memory

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts of ``agent``'s memory, the most relevant to ``query`` first."""
        return self.wait().recall(agent, query, k=k)

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``texts`` in ``agent``'s memory, with ``metadata`` on each."""
        self.wait().remember(agent, texts, metadata=metadata)

    def close(self) -> None:
        """Wait for the thread and close the store it opened.

        A store that failed to open and was never used ends the run with a warning, not an
        error: the run did not need it.
        """
        self._thread.join()
        if self._memory is not None:
            self._memory.close()
        elif self._error is not None and not self._raised:
            logger.warning("agent memory could not be opened: %s", self._error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_agent_memory_in_background(
    settings: Settings, *, embeddings: Embeddings | str = "auto"
) -> BackgroundAgentMemory:
    """Check the memory options now and open agent memory on a background thread.

    Args:
        settings: Resolved settings; memory lives in ``<home>/chroma``.
        embeddings: An embedder, or ``"auto"`` / ``"minilm"`` / ``"lexical"``.

    Raises:
        UsageError: The data directory is not writable, or the embedder is unknown or not
            installed (before any thread starts).
    """
    ensure_home(settings)
    chosen = load_embeddings(embeddings) if isinstance(embeddings, str) else embeddings
    return BackgroundAgentMemory(settings, embeddings=chosen)
