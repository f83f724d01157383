"""Persistence: the checkpointer, agent memory, snapshots, pruning, maintenance, the scheduler.

Names load on first use, so importing the checkpointer does not import Chroma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiagent._lazy import lazy_exports

if TYPE_CHECKING:
    from multiagent.persistence.checkpointer import open_checkpointer as open_checkpointer
    from multiagent.persistence.maintenance import ChromaDBMaintenance as ChromaDBMaintenance
    from multiagent.persistence.memory import AgentMemory as AgentMemory
    from multiagent.persistence.memory import ChromaAgentMemory as ChromaAgentMemory
    from multiagent.persistence.memory import open_agent_memory as open_agent_memory
    from multiagent.persistence.pruning import PruneReport as PruneReport
    from multiagent.persistence.pruning import prune_checkpoints as prune_checkpoints
    from multiagent.persistence.scheduler import (
        MemoryPersistenceScheduler as MemoryPersistenceScheduler,
    )
    from multiagent.persistence.snapshots import MemorySnapshot as MemorySnapshot
    from multiagent.persistence.status import persistence_status as persistence_status

_EXPORTS: dict[str, str] = {
    "AgentMemory": "multiagent.persistence.memory",
    "ChromaAgentMemory": "multiagent.persistence.memory",
    "ChromaDBMaintenance": "multiagent.persistence.maintenance",
    "MemoryPersistenceScheduler": "multiagent.persistence.scheduler",
    "MemorySnapshot": "multiagent.persistence.snapshots",
    "PruneReport": "multiagent.persistence.pruning",
    "open_agent_memory": "multiagent.persistence.memory",
    "open_checkpointer": "multiagent.persistence.checkpointer",
    "persistence_status": "multiagent.persistence.status",
    "prune_checkpoints": "multiagent.persistence.pruning",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
