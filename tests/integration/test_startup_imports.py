"""Start-up: what the CLI and a simulated run leave unimported.

Each optional backend (Redis, servers, the scheduler, Chroma, provider SDKs) is imported where it
is used, so a run that does not use it does not pay for it. The checks run in new processes and
read ``sys.modules``: an import moved back to a module's top fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Never needed by ``import multiagent.cli`` (every command's module is imported by it).
NOT_FOR_THE_CLI = (
    "apscheduler",
    "chromadb",
    "fastapi",
    "httpx2",
    "langchain_openai",
    "langgraph",
    "llama_cpp",
    "openai",
    "psycopg",
    "redis",
    "uvicorn",
)
#: Never needed by a run on the simulated provider with memory off and no Redis configured.
NOT_FOR_A_SIMULATED_RUN = (
    "apscheduler",
    "chromadb",
    "fastapi",
    "langchain_openai",
    "llama_cpp",
    "multiagent.graphs.batch",
    "multiagent.graphs.meeting",
    "multiagent.graphs.validation",
    "multiagent.persistence.memory",
    "numpy",
    "openai",
    "psycopg",
    "redis",
    "uvicorn",
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MULTIAGENT_", "OPENAI_"))}
    env.update({"MULTIAGENT_HOME": str(home), "MULTIAGENT_PROVIDER": "sim"})
    return env


def _loaded(code: str, *, names: tuple[str, ...], home: Path) -> list[str]:
    """Run ``code`` in a new process; the ``names`` in its ``sys.modules`` when it exits."""
    out = home / "modules.json"
    prelude = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write("
        f"json.dumps([m for m in {names!r} if m in sys.modules])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + code],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded: list[str] = json.loads(out.read_text(encoding="utf-8"))
    return loaded


def test_cli_import_loads_no_backend(tmp_path: Path) -> None:
    assert _loaded("import multiagent.cli", names=NOT_FOR_THE_CLI, home=tmp_path) == []


@pytest.mark.slow
def test_simulated_run_without_memory_loads_no_unused_backend(tmp_path: Path) -> None:
    code = (
        "import runpy\n"
        "sys.argv = ['multiagent', 'run', 'Plan a product launch for a small bakery', "
        "'--json', '--memory', 'off']\n"
        "runpy.run_module('multiagent', run_name='__main__')\n"
    )
    loaded = _loaded(code, names=(*NOT_FOR_A_SIMULATED_RUN, "langgraph"), home=tmp_path)
    # langgraph proves the run itself happened in this process; nothing else may be there
    assert loaded == ["langgraph"]
