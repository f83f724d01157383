"""multiagent: teams of LLM agents as LangGraph state graphs, built for production.

One import serves a notebook: every public name is re-exported here and loaded on first use, so
``import multiagent`` stays fast for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiagent._lazy import lazy_exports

if TYPE_CHECKING:
    from multiagent._interrupt import StopRequested as StopRequested
    from multiagent._interrupt import stop_on_ctrl_c as stop_on_ctrl_c
    from multiagent.graphs.batch import batch_cross_validate as batch_cross_validate
    from multiagent.graphs.meeting import build_meeting_graph as build_meeting_graph
    from multiagent.graphs.orchestration import (
        build_orchestration_graph as build_orchestration_graph,
    )
    from multiagent.graphs.validation import build_validation_graph as build_validation_graph
    from multiagent.models.adaptive import AdaptiveBackpressure as AdaptiveBackpressure
    from multiagent.models.batch import acreate_batch_completions as acreate_batch_completions
    from multiagent.models.batch import create_batch_completions as create_batch_completions
    from multiagent.models.factory import build_chat_model as build_chat_model
    from multiagent.models.ledger import RunLedger as RunLedger
    from multiagent.models.pipeline import ModelPipeline as ModelPipeline
    from multiagent.nodes.context import WorkflowContext as WorkflowContext
    from multiagent.nodes.context import build_context as build_context
    from multiagent.observability.cache_stats import cache_analytics as cache_analytics
    from multiagent.observability.history import MetricsHistory as MetricsHistory
    from multiagent.observability.history import (
        metrics_persist_hook as metrics_persist_hook,
    )
    from multiagent.observability.history import persist_metrics as persist_metrics
    from multiagent.observability.otel import (
        OpenTelemetryCallbackHandler as OpenTelemetryCallbackHandler,
    )
    from multiagent.observability.server import run_metrics_server as run_metrics_server
    from multiagent.observability.tracing import configure_tracing as configure_tracing
    from multiagent.observability.tracing import run_config as run_config
    from multiagent.observability.tracing import shutdown_tracing as shutdown_tracing
    from multiagent.persistence.checkpointer import (
        open_async_checkpointer as open_async_checkpointer,
    )
    from multiagent.persistence.checkpointer import open_checkpointer as open_checkpointer
    from multiagent.persistence.maintenance import ChromaDBMaintenance as ChromaDBMaintenance
    from multiagent.persistence.memory import AgentMemory as AgentMemory
    from multiagent.persistence.memory import open_agent_memory as open_agent_memory
    from multiagent.persistence.scheduler import (
        MemoryPersistenceScheduler as MemoryPersistenceScheduler,
    )
    from multiagent.persistence.snapshots import MemorySnapshot as MemorySnapshot
    from multiagent.policies.settings import Settings as Settings
    from multiagent.policies.settings import load_settings as load_settings
    from multiagent.sim.config import SimServerConfig as SimServerConfig
    from multiagent.sim.model import SimulatedChatModel as SimulatedChatModel
    from multiagent.sim.runner import run_sim_server as run_sim_server

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AdaptiveBackpressure": "multiagent.models.adaptive",
    "AgentMemory": "multiagent.persistence.memory",
    "ChromaDBMaintenance": "multiagent.persistence.maintenance",
    "MemoryPersistenceScheduler": "multiagent.persistence.scheduler",
    "MemorySnapshot": "multiagent.persistence.snapshots",
    "MetricsHistory": "multiagent.observability.history",
    "ModelPipeline": "multiagent.models.pipeline",
    "OpenTelemetryCallbackHandler": "multiagent.observability.otel",
    "RunLedger": "multiagent.models.ledger",
    "Settings": "multiagent.policies.settings",
    "SimServerConfig": "multiagent.sim.config",
    "SimulatedChatModel": "multiagent.sim.model",
    "StopRequested": "multiagent._interrupt",
    "WorkflowContext": "multiagent.nodes.context",
    "acreate_batch_completions": "multiagent.models.batch",
    "batch_cross_validate": "multiagent.graphs.batch",
    "build_chat_model": "multiagent.models.factory",
    "build_context": "multiagent.nodes.context",
    "build_meeting_graph": "multiagent.graphs.meeting",
    "build_orchestration_graph": "multiagent.graphs.orchestration",
    "build_validation_graph": "multiagent.graphs.validation",
    "cache_analytics": "multiagent.observability.cache_stats",
    "configure_tracing": "multiagent.observability.tracing",
    "create_batch_completions": "multiagent.models.batch",
    "load_settings": "multiagent.policies.settings",
    "metrics_persist_hook": "multiagent.observability.history",
    "open_agent_memory": "multiagent.persistence.memory",
    "open_async_checkpointer": "multiagent.persistence.checkpointer",
    "open_checkpointer": "multiagent.persistence.checkpointer",
    "persist_metrics": "multiagent.observability.history",
    "run_config": "multiagent.observability.tracing",
    "run_metrics_server": "multiagent.observability.server",
    "run_sim_server": "multiagent.sim.runner",
    "shutdown_tracing": "multiagent.observability.tracing",
    "stop_on_ctrl_c": "multiagent._interrupt",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
