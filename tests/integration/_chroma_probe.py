"""Run a probe script about Chroma's import in a new process (the test process may have
imported Chroma already) and read the JSON document it prints last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_chroma_probe(script: str, directory: Path) -> dict[str, Any]:
    """``script`` run with ``directory`` as its argument, without OTEL_/CHROMA_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHROMA_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
