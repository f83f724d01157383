"""multiagent: teams of LLM agents as LangGraph state graphs, built for production.

One import serves a notebook: every public name is re-exported here and loaded on first use, so
``import multiagent`` stays fast for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiagent.models.factory import build_chat_model as build_chat_model
    from multiagent.models.simulated import SimulatedChatModel as SimulatedChatModel
    from multiagent.policies.settings import Settings as Settings
    from multiagent.policies.settings import load_settings as load_settings
    from multiagent.sim.config import SimServerConfig as SimServerConfig
    from multiagent.sim.runner import run_sim_server as run_sim_server

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Settings": "multiagent.policies.settings",
    "SimServerConfig": "multiagent.sim.config",
    "SimulatedChatModel": "multiagent.models.simulated",
    "build_chat_model": "multiagent.models.factory",
    "load_settings": "multiagent.policies.settings",
    "run_sim_server": "multiagent.sim.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multiagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
