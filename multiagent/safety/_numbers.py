"""Finders for the number-shaped kinds: payment cards, IBANs, US SSNs, IP addresses, phones.

Each finder yields ``(start, end)`` spans of one kind. A candidate found by a loose pattern is
kept only when a check that does not depend on context holds (Luhn and issuer prefix, mod 97 and
the country's IBAN length, :mod:`ipaddress`, libphonenumber's validity), so look-alikes such as
ISBNs, EAN-13 codes, order numbers and amounts fail the check rather than a list of exceptions.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

Span = tuple[int, int]

# -- payment cards -------------------------------------------------------------------------
# groups of digits joined by single spaces or hyphens, not glued to a code ("DE57 4102 ...");
# a card is 13-19 digits of whole groups, so one followed by its expiry or CVV, or listed after
# another number, is still found, while a longer run of digits is never cut inside a group
_DIGIT_RUN = re.compile(r"(?<![\w-])(?<!\d[ -])\d+(?:[ -]\d+)*(?![\w-])")
_DIGIT_GROUP = re.compile(r"\d+")
# issuer prefixes and the lengths each issues (ISO/IEC 7812 ranges of the big networks)
_ISSUERS: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = (
    (re.compile(r"4"), frozenset({16, 19})),  # Visa (13-digit cards are long retired)
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), frozenset({16})),  # Mastercard
    (re.compile(r"3[47]"), frozenset({15})),  # American Express
    (re.compile(r"3(?:0[0-5]|[68])"), frozenset({14, 16})),  # Diners Club
    (re.compile(r"6(?:011|5|4[4-9])"), frozenset({16, 19})),  # Discover
    (re.compile(r"35(?:2[89]|[3-8])"), frozenset({16, 19})),  # JCB
    (re.compile(r"62"), frozenset({16, 17, 18, 19})),  # UnionPay
)


def luhn_ok(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    issued = any(p.match(digits) and len(digits) in n for p, n in _ISSUERS)
    return issued and luhn_ok(digits)


def find_cards(text: str) -> Iterator[Span]:
    """Payment card numbers: an issuer's prefix and length, and the Luhn check."""
    for run in _DIGIT_RUN.finditer(text):
        groups = [g.span() for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        first = 0
        while first < len(groups):
            card, digits = None, 0
            for last in range(first, len(groups)):
                digits += groups[last][1] - groups[last][0]
                if digits > 19:
                    break
                if digits >= 13 and _card_ok(text[groups[first][0] : groups[last][1]]):
                    card = last  # the longest card starting at this group
            if card is None:
                first += 1
                continue
            yield groups[first][0], groups[card][1]
            first = card + 1


# -- IBANs ---------------------------------------------------------------------------------
# lengths from the SWIFT IBAN registry; a country not listed has no IBAN
_IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
    "DK18 DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 "
    "IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 "
    "ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 "
    "SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 "
)
_IBAN_LENGTHS = {code[:2]: int(code[2:]) for code in _IBAN_REGISTRY.split()}
_IBAN_START = re.compile(r"(?<![\w])([A-Z]{2})(\d{2})")
_IBAN_CHAR = re.compile(r"[A-Z0-9]")


def iban_ok(compact: str) -> bool:
    """Whether ``compact`` (no spaces) has its country's length and passes mod 97."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    number = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
    return int(number) % 97 == 1


def find_ibans(text: str) -> Iterator[Span]:
    """IBANs, compact or in groups separated by single spaces."""
    for match in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(match.group(1))
        if length is None:
            continue
        # take exactly the country's length, skipping single spaces between groups
        compact, pos = match.group(1) + match.group(2), match.end()
        while len(compact) < length and pos < len(text):
            ch = text[pos]
            if ch == " " and pos + 1 < len(text) and _IBAN_CHAR.match(text[pos + 1]):
                pos += 1
                continue
            if not _IBAN_CHAR.match(ch):
                break
            compact += ch
            pos += 1
        if len(compact) == length and not text[pos : pos + 1].isalnum() and iban_ok(compact):
            yield match.start(), pos


# -- US social security numbers ------------------------------------------------------------
# the SSA never issues area 000, 666 or 9xx, group 00 or serial 0000; hyphens are required
# (nine bare digits are as likely an order number)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")


def find_ssns(text: str) -> Iterator[Span]:
    """US social security numbers written ``AAA-GG-SSSS`` (or with spaces)."""
    for match in _SSN.finditer(text):
        yield match.span()


# -- IP addresses --------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:\d+(?:\.\d+){3})?(?![\w:])"
)
# "v1.2.3.4", "version 2.1.0.3", "Build 10.0.1.2": four-part versions are valid IPv4 too
_VERSION_BEFORE = re.compile(
    r"(?i)(?:\bv|\b(?:version|versi|release|build|rilis|fassung)\s*:?\s*)$"
)


def find_ips(text: str) -> Iterator[Span]:
    """IPv4 and IPv6 addresses that :mod:`ipaddress` accepts (four-part versions excluded)."""
    for match in _IPV4.finditer(text):
        if _VERSION_BEFORE.search(text[max(0, match.start() - 12) : match.start()]):
            continue
        try:
            ipaddress.IPv4Address(match.group(0))
        except ValueError:
            continue
        yield match.span()
    for match in _IPV6.finditer(text):
        candidate = match.group(0)
        if not re.search(r"[0-9A-Fa-f]", candidate):
            continue  # "::" alone is an address, but in prose it is punctuation
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield match.span()


# -- phone numbers -------------------------------------------------------------------------
#: Regions whose national formats are recognised; numbers with ``+`` are found in any region.
PHONE_REGIONS = ("US", "GB", "DE", "ID")
_CURRENCY_BEFORE = re.compile(r"(?i)(?:rp\.?|idr|eur|usd|gbp|[€$£¥])\s*$")
_THOUSANDS = re.compile(r"^\d{1,3}(?:[.,]\d{3})+$")
# the US ZIP+4 shape; as a German area code and number it needs a phone word to be one
_ZIP4 = re.compile(r"^\d{5}-\d{4}$")
_DATE = re.compile(r"^(?:\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|\d{4}[./-]\d{1,2}[./-]\d{1,2})$")
# a number glued to a longer identifier ("ORD-2023-362265", "v2/0301234567") is part of it
_GLUED_BEFORE = re.compile(r"[\w][-/.#]$|[^\W\d_]$")
_GLUED_AFTER = re.compile(r"^[-/.][\w]|^[^\W\d_]")
# a number labelled as an identifier is not a phone, unless a phone word is near it too
_ID_LABEL_BEFORE = re.compile(
    r"(?i)(?:#|\b(?:no|nr|nomor|number|nummer|id|isbn|ean|gtin|sku|order|invoice|rechnung\w*|"
    r"bestell\w*|pesanan|faktur|resi|tracking|sendung\w*|kode|code|ref|zip|plz|"
    r"postleitzahl|kode\s+pos|postcode|zip\s+code)\.?:?)"
    r"(?:\s+(?:is|ist|lautet|adalah|anda|ihre?|your))*\s*$"
)
_PHONE_WORD_BEFORE = re.compile(
    r"(?i)\b(?:tel\w*|phone|call|ring|hp|wa|whatsapp|mobil\w*|handy|fax|hubungi|ruf\w*|"
    r"cell|kontak|contact|erreichbar|anrufen)\b"
)


@functools.cache
def _phonenumbers() -> Any:
    """libphonenumber, imported on first use (its metadata takes a while to load)."""
    import phonenumbers

    return phonenumbers


def find_phones(text: str, *, regions: tuple[str, ...] = PHONE_REGIONS) -> Iterator[Span]:
    """Phone numbers libphonenumber finds valid in one of ``regions`` (or international)."""
    if sum(ch.isdigit() for ch in text) < 7:
        return
    pn = _phonenumbers()
    seen: set[Span] = set()
    for region in regions:
        for match in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID):
            span = (match.start, match.end)
            if span in seen:
                continue
            seen.add(span)
            before = text[max(0, match.start - 30) : match.start]
            raw = match.raw_string
            if _THOUSANDS.match(raw) or _CURRENCY_BEFORE.search(before[-5:]):
                continue  # an amount such as "Rp 706.315.000"
            if _DATE.match(raw) or sum(ch.isdigit() for ch in raw) > 15:
                continue  # a date; or longer than any number E.164 allows
            if _VERSION_BEFORE.search(before[-12:]):
                continue
            if _GLUED_BEFORE.search(before[-2:]) or _GLUED_AFTER.match(
                text[match.end : match.end + 2]
            ):
                continue
            labelled = _ID_LABEL_BEFORE.search(before) or _ZIP4.match(raw)
            if labelled and not _PHONE_WORD_BEFORE.search(before):
                continue  # "Order #4829103746", "Rechnungsnr. 0301 234567", "IL 04241-6651"
            yield span
