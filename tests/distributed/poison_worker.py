"""``multiagent worker`` that SIGKILLs itself on every delivery of a poisoned item (tests only).

Run as ``python tests/distributed/poison_worker.py worker --queue Q ...``: the real worker
command, except that a chunk holding an item whose text contains :data:`POISON` kills the
process (``SIGKILL``: no handler runs, nothing is reported) before its chunk runs. That is a
crash loop: every worker that takes the entry dies, and only the stream's delivery count knows.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from multiagent.distributed.worker import QueueWorker

POISON = "POISON-PILL"
_process = QueueWorker._process


def _poisoned(self: QueueWorker, entry_id: str, fields: dict[str, Any], *, reclaimed: bool) -> None:
    if POISON in str(fields.get("items", "")):
        os.kill(os.getpid(), signal.SIGKILL)
    _process(self, entry_id, fields, reclaimed=reclaimed)


QueueWorker._process = _poisoned  # type: ignore[method-assign]

if __name__ == "__main__":
    from multiagent.cli import main

    sys.argv[0] = "multiagent"
    main()
