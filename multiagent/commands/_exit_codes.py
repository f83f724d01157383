"""How a workflow command's outcome becomes the process's exit code.

``run``, ``meeting`` and ``validate`` (:mod:`multiagent.commands.workflows`), and a local or
queued batch of ``validate``, exit with:

- 0: the run completed (or a plan was rejected, or is waiting for approval); for ``validate``,
  every item passed;
- 1: it stopped on the budget or a provider failure (resumable with ``--resume``); for
  ``validate``, also an item that no validator answered (each failed after retries);
- 2: bad input;
- 3: ``validate`` only: consensus failed on at least one item (the validators that answered
  rejected it);
- 4: ``validate`` only: no item failed, but at least one is inconclusive (fewer validators
  answered than the profile's quorum);
- 130: interrupted by Ctrl-C; the finished steps are kept and the resume command is printed.
"""

from __future__ import annotations

from typing import Any

_EXIT = {
    "completed": 0, "rejected": 0, "awaiting_approval": 0, "budget_exceeded": 1, "failed": 1,
    "interrupted": 130,
}  # fmt: skip
#: ``validate``'s exit codes when the run completed but consensus did not pass every item.
EXIT_CONSENSUS_FAILED = 3
EXIT_INCONCLUSIVE = 4


def exit_code(status: str, results: list[dict[str, Any]] | None = None) -> int:
    """The exit code of a run that ended in ``status`` (see the module docstring); a completed
    validation's code says whether consensus passed every item of ``results``."""
    code = _EXIT[status]
    if code or status != "completed" or not results:
        return code
    statuses = {r["status"] for r in results}
    if "failed" in statuses:
        return EXIT_CONSENSUS_FAILED
    return EXIT_INCONCLUSIVE if "inconclusive" in statuses else 0
