"""Agent nodes: agents and their catalogue, the run context, and the nodes of the workflows."""

from multiagent.nodes.agents import BUILTIN_AGENTS, AgentKind, AgentSpec
from multiagent.nodes.agents_file import AgentCatalog, load_agents
from multiagent.nodes.context import AgentMemory, WorkflowContext, build_context, context_of
from multiagent.nodes.usage import Usage

__all__ = [
    "BUILTIN_AGENTS",
    "AgentCatalog",
    "AgentKind",
    "AgentMemory",
    "AgentSpec",
    "Usage",
    "WorkflowContext",
    "build_context",
    "context_of",
    "load_agents",
]
