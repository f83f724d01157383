"""Agent long-term memory in a LangGraph store (``BaseStore``): what LangGraph Server provides.

When a graph runs on LangGraph Server (or is compiled with ``store=``), agents remember in that
store instead of the embedded Chroma: one namespace per agent, ``("multiagent", "memory",
<agent>)``, one item per remembered text. Recall is the store's search: semantic when the store
has an index (``store.index`` in ``langgraph.json``), else the agent's most recent items.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from langgraph.store.base import BaseStore

#: The namespace prefix under which every agent's memory lives.
NAMESPACE_PREFIX: tuple[str, ...] = ("multiagent", "memory")
#: The item field that holds the remembered text (the one a store index embeds).
TEXT_FIELD = "text"


def agent_namespace(agent: str) -> tuple[str, ...]:
    """The store namespace of ``agent``'s memory."""
    return (*NAMESPACE_PREFIX, agent)


def _item_key(text: str) -> str:
    """A stable key: remembering the same text again updates its item, never duplicates it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class StoreAgentMemory:
    """:class:`~multiagent.nodes.context.AgentMemory` over a LangGraph ``BaseStore``.

    Args:
        store: The store (the server's, or any ``BaseStore`` a graph is compiled with).
    """

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    def recall(self, agent: str, query: str, *, k: int = 3) -> list[str]:
        """Return up to ``k`` texts of ``agent``'s memory, the most relevant to ``query`` first."""
        items = self.store.search(agent_namespace(agent), query=query, limit=k)
        texts = [item.value.get(TEXT_FIELD) for item in items]
        return [text for text in texts if isinstance(text, str) and text]

    def remember(
        self, agent: str, texts: list[str], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``texts`` in ``agent``'s memory, with ``metadata`` on each (e.g. thread_id)."""
        stored_at = datetime.now(UTC).isoformat()
        for text in texts:
            value = {**(metadata or {}), TEXT_FIELD: text, "stored_at": stored_at}
            self.store.put(agent_namespace(agent), _item_key(text), value)
