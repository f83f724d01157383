"""The OpenAI-compatible simulated provider server (``multiagent sim serve``).

Configuration and schedules load eagerly; the app and runner pull in the server stack (FastAPI,
uvicorn) and load on first use, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiagent._lazy import lazy_exports
from multiagent.sim.config import Phase, PhaseCapacity, SimServerConfig, build_sim_config
from multiagent.sim.schedule import load_schedule, parse_schedule

if TYPE_CHECKING:
    from multiagent.sim.app import create_sim_app as create_sim_app
    from multiagent.sim.runner import run_sim_server as run_sim_server

_LAZY = {"create_sim_app": "multiagent.sim.app", "run_sim_server": "multiagent.sim.runner"}

__all__ = [
    "Phase",
    "PhaseCapacity",
    "SimServerConfig",
    "build_sim_config",
    "create_sim_app",
    "load_schedule",
    "parse_schedule",
    "run_sim_server",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
