"""PII redaction for prompts, before they leave the process and before they become cache keys.

Recognised: e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs
(mod-97-checked) and API-key-like secrets (OpenAI, AWS, GitHub, Slack, Google keys, bearer
tokens, ``api_key=...`` assignments). Each is replaced by a typed placeholder such as
``[REDACTED_EMAIL]``; placeholders match no pattern, so redacting twice changes nothing.
Counts go to the metrics store as ``multiagent_pii_redactions_total{kind}``.

The patterns favour precision over recall: a number is a card only when its checksum holds, a
phone needs 9 to 15 digits, so dates, amounts and identifiers mostly pass untouched.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage

from multiagent._metrics import get_metrics

_SECRET = re.compile(
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\b[Bb]earer\s+[A-Za-z0-9._~+/\-]{20,}=*"
)
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b((?:api[_\-]?key|secret(?:[_\-]?key)?|access[_\-]?token|auth[_\-]?token|password|passwd)"
    r"\s*[:=]\s*)([\"']?)([^\s\"']{6,})\2"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().\-]{7,}\d(?!\w)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@dataclass
class Redaction:
    """A redacted text and how many of each kind were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Number of replacements made."""
        return sum(self.counts.values())


def _sub(
    pattern: re.Pattern[str],
    kind: str,
    text: str,
    counts: Counter[str],
    accept: Callable[[str], bool] | None = None,
) -> str:
    def replace(match: re.Match[str]) -> str:
        if accept is not None and not accept(match.group(0)):
            return match.group(0)
        counts[kind] += 1
        return f"[REDACTED_{kind.upper()}]"

    return pattern.sub(replace, text)


def _assigned(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(3).startswith("[REDACTED_"):
            return match.group(0)
        counts["secret"] += 1
        return f"{match.group(1)}{match.group(2)}[REDACTED_SECRET]{match.group(2)}"

    return _ASSIGNED_SECRET.sub(replace, text)


def redact_text(text: str) -> Redaction:
    """Replace PII and secrets in ``text`` with typed placeholders.

    Args:
        text: Any text.

    Returns:
        The redacted text with the count of each kind replaced (``secret``, ``email``, ``iban``,
        ``card``, ``phone``).
    """
    counts: Counter[str] = Counter()
    out = _sub(_SECRET, "secret", text, counts)
    out = _assigned(out, counts)
    out = _sub(_EMAIL, "email", out, counts)
    out = _sub(_IBAN, "iban", out, counts, _iban_ok)
    out = _sub(_CARD, "card", out, counts, lambda s: _luhn_ok(_digits(s)))
    out = _sub(_PHONE, "phone", out, counts, lambda s: 9 <= len(_digits(s)) <= 15)
    return Redaction(text=out, counts=counts)


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
        content = _redact_content(message.content, counts)
        changed = sum(counts.values()) != before
        out.append(message.model_copy(update={"content": content}) if changed else message)
    if record:
        metrics = get_metrics()
        for kind, n in counts.items():
            metrics.inc("pii_redactions_total", value=n, labels={"kind": kind})
    return out, counts
