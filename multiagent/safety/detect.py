"""Find personal data and secrets in text: which kinds, chosen how, and where they are.

What each kind rests on, and why:

- ``phone``: libphonenumber (the ``phonenumbers`` package, Google's metadata for every region),
  matching national formats of the US, the UK, Germany and Indonesia and any number written
  with ``+``. It knows which digit strings are valid numbers where, so order numbers, ISBNs and
  amounts fail validation instead of a digit-count rule. Amounts (``Rp 706.315.000``) and
  numbers labelled as identifiers (``Order #…``, ``No. Resi``) are kept.
- ``secret``: detect-secrets' plugin patterns (a maintained set of token shapes) plus a few
  newer shapes and multilingual ``key: value`` pairs; see :mod:`multiagent.safety._secrets`.
- ``card``: issuer prefix and length (ISO/IEC 7812) and the Luhn check, so EAN-13 codes and
  tracking numbers that happen to pass Luhn are still kept.
- ``iban``: the country's registered length and mod 97.
- ``ip``: IPv4 and IPv6 candidates validated by :mod:`ipaddress`; four-part numbers after
  "version"/"v"/"build" are versions.
- ``email``: Unicode local parts and domains (``jürgen.müller@beispiel.de``).
- ``ssn``: US social security numbers in their written form, with the SSA's never-issued
  ranges excluded.

Presidio was not used: its recognizers need a spaCy model that is downloaded at run time, and
the ones that matter here wrap the same libraries. Where two findings overlap, the one of the
kind listed earlier in :data:`KINDS` wins, then the longer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from multiagent.safety._numbers import find_cards, find_ibans, find_ips, find_phones, find_ssns
from multiagent.safety._secrets import find_secrets

#: The kinds found, in the order that settles overlaps.
KINDS = ("secret", "email", "iban", "card", "ssn", "ip", "phone")

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[\w.%+\-]*\w@(?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w\-])"
)


# "logo@2x.png": a file name for high-density screens, not an address
_FILE_SUFFIX = re.compile(r"(?i)\.(?:png|jpe?g|gif|svg|webp|avif|ico|pdf|js|css|html?)$")


def _find_emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            if not _FILE_SUFFIX.search(match.group(0)):
                yield match.span()


_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "secret": find_secrets,
    "email": _find_emails,
    "iban": find_ibans,
    "card": find_cards,
    "ssn": find_ssns,
    "ip": find_ips,
    "phone": find_phones,
}


@dataclass(frozen=True, order=True)
class Finding:
    """One piece of personal data or secret: ``text[start:end]`` of ``kind``."""

    start: int
    end: int
    kind: str


def find_pii(text: str) -> list[Finding]:
    """Every piece of personal data and every secret in ``text``, non-overlapping, in order.

    Args:
        text: Any text.

    Returns:
        The findings sorted by position; kinds are those of :data:`KINDS`.
    """
    candidates = [
        (rank, -(end - start), start, end, kind)
        for rank, kind in enumerate(KINDS)
        for start, end in _FINDERS[kind](text)
        if end > start
    ]
    kept: list[Finding] = []
    for _, _, start, end, kind in sorted(candidates):
        if all(end <= f.start or start >= f.end for f in kept):
            kept.append(Finding(start, end, kind))
    return sorted(kept)
