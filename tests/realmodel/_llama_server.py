"""Run llama-cpp-python's own server (``python -m llama_cpp.server``), arguments unchanged.

Only the model loader's default parameters are wrapped (no extra CPU buffer types), exactly as
the ``local`` provider loads models: a llama.cpp built for a CPU with AMX faults in containers
that do not grant AMX state (see :func:`multiagent.models.local_engine.plain_cpu_buffers`).
"""

from __future__ import annotations

import runpy

from multiagent.models.local_engine import plain_cpu_buffers

if __name__ == "__main__":
    with plain_cpu_buffers():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
