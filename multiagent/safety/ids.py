"""Ids that hold personal data: found, and refused where the profile redacts.

A thread or batch id is a key: the checkpoints, the live runs file, agent memory's metadata,
snapshots, the audit trail, trace metadata and every listing hold it as given, and a user finds
their thread by it, so it cannot be replaced by a placeholder the way a task is. With
``features.pii_redaction`` on, an id the user gives that holds personal data (``host-10.1.2.3``,
``card-4111111111111111``) is refused before anything is stored; ids the project generates
never hold any (:func:`~multiagent.graphs.workflows.new_thread_id` draws again).

In an id ``_`` and ``-`` join words (``ip_10.1.2.3``), whereas the finders of
:mod:`multiagent.safety.detect` read a value glued to a word character as part of a longer
token and leave it; so an id is searched as it is (``ghp_…`` tokens hold ``_``) and with them
read as spaces.
"""

from __future__ import annotations

from multiagent.errors import UsageError
from multiagent.safety.detect import Finding, find_pii

_JOINERS = str.maketrans("_-", "  ")


def find_pii_in_id(value: str) -> list[Finding]:
    """The personal data and secrets in an id, non-overlapping, in order: those found in it
    as it is, and those found with ``_`` and ``-`` read as word breaks."""
    kept: list[Finding] = []
    as_is = find_pii(value)
    for finding in [*as_is, *find_pii(value.translate(_JOINERS))]:
        if all(finding.end <= f.start or finding.start >= f.end for f in kept):
            kept.append(finding)
    return sorted(kept)


def check_id_private(value: str, *, kind: str, source: str, redacting: bool) -> str:
    """Return ``value``; when ``redacting``, raise one line if it holds personal data.

    Args:
        value: An id a user gave (a thread id, a batch id).
        kind: What it is, for the message (``"thread id"``).
        source: Where it came from, for the message (``"--thread"``, ``"thread_id"``).
        redacting: The profile's ``features.pii_redaction``.

    Raises:
        UsageError: Naming the id with its personal values as placeholders (never the values:
            the message may be logged), their kinds, and what to do.
    """
    findings = find_pii_in_id(value) if redacting else []
    if not findings:
        return value
    parts, pos = [], 0
    for finding in findings:
        parts += [value[pos : finding.start], f"[REDACTED_{finding.kind.upper()}]"]
        pos = finding.end
    shown = "".join(parts) + value[pos:]
    kinds = ", ".join(sorted({finding.kind for finding in findings}))
    raise UsageError(
        f"invalid {kind} {shown!r} (from {source}): it holds personal data ({kinds}), and the "
        "profile redacts personal data while ids are stored as given; choose an id without "
        "it, or leave it out for a generated one"
    )
