"""Replace personal data and secrets by placeholders: in text, messages and nested values.

Two ways to replace:

- :func:`redact_text`: a typed placeholder such as ``[REDACTED_EMAIL]``, the same for every
  value; nothing can turn it back.
- :class:`Pseudonymizer`: numbered placeholders such as ``<EMAIL_1>`` (the same value gets the
  same number), with the mapping held in that object only, so the person at the terminal may see
  their own values again in the final output of their run (:meth:`Pseudonymizer.restore`) while
  everything stored holds the placeholders. The mapping is never written anywhere.

Placeholders match no finder, so redacting twice changes nothing. Counts go to the metrics store
as ``multiagent_pii_redactions_total{kind}`` when asked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage

from multiagent._metrics import get_metrics
from multiagent.safety.detect import find_pii

T = TypeVar("T")
_PSEUDONYM = re.compile(r"<([A-Z]+)_(\d+)>")


@dataclass
class Redaction:
    """A redacted text and how many of each kind were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Number of replacements made."""
        return sum(self.counts.values())


def _replace(text: str, placeholder: Callable[[str, str], str]) -> Redaction:
    """``text`` with every finding replaced by ``placeholder(kind, value)``."""
    counts: Counter[str] = Counter()
    parts: list[str] = []
    pos = 0
    for finding in find_pii(text):
        parts += [
            text[pos : finding.start],
            placeholder(finding.kind, text[finding.start : finding.end]),
        ]
        counts[finding.kind] += 1
        pos = finding.end
    parts.append(text[pos:])
    return Redaction(text="".join(parts) if counts else text, counts=counts)


def redact_text(text: str) -> Redaction:
    """Replace PII and secrets in ``text`` with typed placeholders such as ``[REDACTED_EMAIL]``.

    Args:
        text: Any text.

    Returns:
        The redacted text with the count of each kind replaced (the kinds of
        :data:`multiagent.safety.detect.KINDS`).
    """
    return _replace(text, lambda kind, _value: f"[REDACTED_{kind.upper()}]")


class Pseudonymizer:
    """Numbered placeholders for one run, reversible only through this object.

    Example:
        >>> p = Pseudonymizer()
        >>> p.redact("mail ann@example.org").text
        'mail <EMAIL_1>'
        >>> p.restore("sent to <EMAIL_1>")
        'sent to ann@example.org'
    """

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._numbers: Counter[str] = Counter()

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self._by_value:
            self._numbers[kind] += 1
            placeholder = f"<{kind.upper()}_{self._numbers[kind]}>"
            self._by_value[key] = placeholder
            self._by_placeholder[placeholder] = value
        return self._by_value[key]

    def redact(self, text: str) -> Redaction:
        """``text`` with each finding replaced by its numbered placeholder."""
        return _replace(text, self._placeholder)

    def redact_value(self, value: T) -> T:
        """:meth:`redact` applied to every string inside ``value``, counted in the metrics.

        The counts are those :func:`redact_input` would have recorded: it changes nothing after
        this (placeholders match no finder), so each value is counted once.
        """
        return redact_value(value, redactor=self.redact)

    def restore(self, text: str) -> str:
        """``text`` with this run's placeholders turned back into the values they stand for."""
        return _PSEUDONYM.sub(lambda m: self._by_placeholder.get(m.group(0), m.group(0)), text)

    def restore_value(self, value: T) -> T:
        """:meth:`restore` applied to every string inside ``value`` (dicts, lists, tuples)."""
        restored: T = _walk(value, lambda text: Redaction(self.restore(text)), Counter())
        return restored


def _walk(value: Any, redact: Callable[[str], Redaction], counts: Counter[str]) -> Any:
    if isinstance(value, str):
        result = redact(value)
        counts.update(result.counts)
        return result.text
    if isinstance(value, dict):
        return {key: _walk(item, redact, counts) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(item, redact, counts) for item in value)
    return value


def redact_value(
    value: T, *, redactor: Callable[[str], Redaction] = redact_text, record: bool = True
) -> T:
    """``value`` with every string inside it redacted (dict keys and non-strings kept).

    Args:
        value: A string, or dicts, lists and tuples holding strings (a workflow's input, a
            tool call's arguments or result).
        redactor: :func:`redact_text`, or a :meth:`Pseudonymizer.redact` for numbered placeholders.
        record: Add the counts to ``multiagent_pii_redactions_total``.

    Returns:
        A redacted copy; ``value`` itself is not changed.
    """
    counts: Counter[str] = Counter()
    out = _walk(value, redactor, counts)
    if record:
        _record(counts)
    return out  # type: ignore[no-any-return]


def redact_input(value: T, *, enabled: bool) -> T:
    """A workflow's input as it may be stored: redacted when ``enabled`` (the profile's
    ``features.pii_redaction``), else ``value`` itself.

    Called where input enters (the workflow runners, the batch and queue entry points) so no
    checkpoint, memory, cache, queue entry, trace or printed output ever holds the raw value.
    """
    if not enabled or value is None:
        return value
    return redact_value(value)


def _record(counts: Counter[str]) -> None:
    metrics = get_metrics()
    for kind, n in counts.items():
        metrics.inc("pii_redactions_total", value=n, labels={"kind": kind})


def _redact_content(content: str | list[str | dict[str, object]], counts: Counter[str]) -> object:
    if isinstance(content, str):
        result = redact_text(content)
        counts.update(result.counts)
        return result.text
    blocks: list[str | dict[str, object]] = []
    for block in content:
        if isinstance(block, str):
            result = redact_text(block)
            counts.update(result.counts)
            blocks.append(result.text)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            result = redact_text(str(block["text"]))
            counts.update(result.counts)
            blocks.append({**block, "text": result.text})
        else:
            blocks.append(block)
    return blocks


def redact_messages(
    messages: Sequence[BaseMessage], *, record: bool = True
) -> tuple[list[BaseMessage], Counter[str]]:
    """Redact the text of every message; messages with nothing to redact are returned as they are.

    Tool-call arguments of AI messages are redacted too.

    Args:
        messages: The prompt.
        record: Add the counts to ``multiagent_pii_redactions_total`` in the metrics store.

    Returns:
        The redacted messages (copies where changed) and the count of each kind replaced.
    """
    counts: Counter[str] = Counter()
    out: list[BaseMessage] = []
    for message in messages:
        before = sum(counts.values())
        update: dict[str, Any] = {"content": _redact_content(message.content, counts)}
        calls = getattr(message, "tool_calls", None)
        if calls:
            update["tool_calls"] = [
                {**call, "args": _walk(call["args"], redact_text, counts)} for call in calls
            ]
        changed = sum(counts.values()) != before
        out.append(message.model_copy(update=update) if changed else message)
    if record:
        _record(counts)
    return out, counts
