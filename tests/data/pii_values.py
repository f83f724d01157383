"""Values for the PII corpus: real-shaped personal data and secrets, and their look-alikes.

Every generator takes the corpus's ``random.Random`` so the corpus is the same on every run.
Phone numbers are drawn until libphonenumber calls them valid (a number nobody can dial is not
a phone number); cards, IBANs, ISBNs and EAN codes carry correct check digits.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string

import phonenumbers

from multiagent.safety._numbers import luhn_ok

_ALNUM = string.ascii_letters + string.digits
_FIRST = [
    "jürgen",
    "anna",
    "budi",
    "siti",
    "john",
    "mary",
    "zoë",
    "björn",
    "dewi",
    "agus",
    "karl-heinz",
    "o.brien",
    "li",
    "françois",
    "ayu",
    "thomas",
    "rina",
    "günther",
]
_LAST = [
    "müller",
    "schmidt",
    "santoso",
    "wijaya",
    "smith",
    "jones",
    "weiß",
    "hartono",
    "nguyen",
    "becker",
    "pratama",
    "o'neil",
    "kusuma",
    "fischer",
    "brown",
    "lestari",
]
_DOMAINS = [
    "beispiel.de",
    "example.com",
    "perusahaan.co.id",
    "mail.example.org",
    "gmx.de",
    "kantor.go.id",
    "uni-muenchen.de",
    "example.co.uk",
    "posteo.de",
    "yahoo.co.id",
]


def _rand(rng: random.Random, n: int, chars: str = _ALNUM) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST).replace("'", ""), rng.choice(_LAST).replace("'", "")
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+{rng.choice(['news', 'shop', 'work'])}",
            f"{last}.{first}",
        ]
    )
    address = f"{local}@{rng.choice(_DOMAINS)}"
    return address.upper() if rng.random() < 0.05 else address


def _valid_number(rng: random.Random, region: str, kind: int) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(region, kind)
    national = str(example.national_number)
    while True:
        keep = rng.randint(2, 4)
        digits = national[:keep] + _rand(rng, len(national) - keep, string.digits)
        number = phonenumbers.parse(digits, region)
        if phonenumbers.is_valid_number(number):
            return number


def phone(rng: random.Random) -> str:
    region = rng.choice(["US", "GB", "DE", "ID", "ID", "DE"])
    kind = rng.choice(
        [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
    )
    number = _valid_number(rng, region, kind)
    fmt = phonenumbers.PhoneNumberFormat
    style = rng.random()
    if style < 0.3:
        return phonenumbers.format_number(number, fmt.INTERNATIONAL)
    if style < 0.4:
        return phonenumbers.format_number(number, fmt.E164)
    national = phonenumbers.format_number(number, fmt.NATIONAL)
    if region == "DE" and style < 0.7:
        head, _, tail = national.partition(" ")
        return f"{head}/{tail.replace(' ', '')}"  # "089/1234567"
    if region == "ID" and style < 0.7:
        return national.replace(" ", "-")  # "0812-3456-7890"
    if region == "US" and style < 0.6:
        digits = str(number.national_number)
        return f"{digits[:3]}.{digits[3:6]}.{digits[6:]}"
    return national


_ISSUERS = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16), ("3528", 16)]


def _luhn_digit(body: str) -> str:
    return next(d for d in "0123456789" if luhn_ok(body + d))


def card(rng: random.Random, *, valid: bool = True) -> str:
    prefix, length = rng.choice(_ISSUERS)
    body = prefix + _rand(rng, length - len(prefix) - 1, string.digits)
    check = _luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    sep = rng.choice([" ", "-", ""])
    if length == 15:
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    return sep.join(digits[i : i + 4] for i in range(0, length, 4))


_IBAN_SHAPES = {"DE": "n18", "GB": "a4n14", "NL": "a4n10", "FR": "n23", "AT": "n16", "ES": "n20"}


def iban(rng: random.Random, *, valid: bool = True) -> str:
    country = rng.choice(list(_IBAN_SHAPES))
    shape = _IBAN_SHAPES[country]
    bban = ""
    for part in (shape[:2], shape[2:]) if shape.startswith("a") else (shape,):
        if part.startswith("a"):
            bban += _rand(rng, int(part[1:]), string.ascii_uppercase)
        elif part:
            bban += _rand(rng, int(part[1:]), string.digits)
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.55:
        choice = rng.random()
        if choice < 0.3:
            return rng.choice(["192.0.2.", "198.51.100.", "203.0.113."]) + str(rng.randint(1, 254))
        if choice < 0.6:
            return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return ".".join(str(rng.randint(1, 223)) for _ in range(4))
    address = ipaddress.IPv6Address(rng.getrandbits(128))
    if rng.random() < 0.4:
        groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(4)]
        address = ipaddress.IPv6Address("2001:db8:" + ":".join(groups[:2]) + "::" + groups[3])
    if rng.random() < 0.2:
        return address.exploded
    return address.compressed


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def jwt(rng: random.Random) -> str:
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64(
        {"sub": str(rng.randint(1000, 99999)), "iat": rng.randint(1600000000, 1800000000)}
    )
    return f"{header}.{payload}.{_rand(rng, 43, _ALNUM + '-_')}"


def secret(rng: random.Random) -> tuple[str, str]:
    """A secret and the text that carries it; the secret is the span to find."""
    shape = rng.randrange(12)
    word = "".join(
        rng.choice(["Sommer", "Matahari", "hunter", "Kopi", "Berlin", "Garuda"]) for _ in "ab"
    )
    pw = word + str(rng.randint(10, 9999)) + rng.choice(["!", "#", "", "?", "$"])
    if shape == 0:
        value = "ghp_" + _rand(rng, 36)
    elif shape == 1:
        value = "github_pat_" + _rand(rng, 22) + "_" + _rand(rng, 59)
    elif shape == 2:
        value = rng.choice(["sk_live_", "rk_live_"]) + _rand(rng, rng.choice([24, 34, 99]))
    elif shape == 3:
        value = rng.choice(["AKIA", "ASIA"]) + _rand(
            rng, 16, string.ascii_uppercase + string.digits
        )
    elif shape == 4:
        value = _rand(rng, 40, _ALNUM + "/+")
        return value, rng.choice(
            [
                f"aws_secret_access_key = {value}",
                f'aws_secret_access_key: "{value}"',
                f"AWS_SECRET_ACCESS_KEY={value}",
            ]
        )
    elif shape == 5:
        value = jwt(rng)
    elif shape == 6:
        return pw, rng.choice(
            [
                f"password: {pw}",
                f"Passwort: {pw}",
                f"kata sandi: {pw}",
                f"Kennwort = {pw}",
                f'"password": "{pw}"',
                f"PASSWORD={pw}",
            ]
        )
    elif shape == 7:
        body = "\n".join(_rand(rng, 64, _ALNUM + "+/") for _ in range(4))
        kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        value = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    elif shape == 8:
        value = (
            "xoxb-"
            + "-".join(_rand(rng, n, string.digits) for n in (11, 12))
            + "-"
            + _rand(rng, 24).lower()
        )
    elif shape == 9:
        value = "sk-proj-" + _rand(rng, 48, _ALNUM + "_-") + _rand(rng, 8)
    elif shape == 10:
        value = "glpat-" + _rand(rng, 20, _ALNUM + "_-") + _rand(rng, 2)
    else:
        value = "AIza" + _rand(rng, 35, _ALNUM + "_-")
    return value, value


# -- look-alikes: must survive -------------------------------------------------------------
def _ean_digit(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return str((10 - total % 10) % 10)


def isbn(rng: random.Random) -> str:
    body = rng.choice(["978", "979"]) + rng.choice(["3", "602", "0", "1"])
    body += _rand(rng, 12 - len(body), string.digits)
    digits = body + _ean_digit(body)
    if rng.random() < 0.6:
        return f"{digits[:3]}-{digits[3]}-{digits[4:7]}-{digits[7:12]}-{digits[12]}"
    return digits


def ean(rng: random.Random) -> str:
    body = rng.choice(["400", "401", "890", "899", "500", "50"]) + _rand(rng, 10, string.digits)
    body = body[:12]
    return body + _ean_digit(body)


def lookalike(rng: random.Random) -> tuple[str, str]:
    """A value that resembles PII, and its type (for the report)."""
    kind = rng.choice(
        [
            "isbn",
            "order",
            "invoice",
            "version",
            "rupiah",
            "ean",
            "zip4",
            "tracking",
            "date",
            "card_bad",
            "iban_bad",
            "amount",
            "time",
            "uuid",
            "sha",
            "mac",
            "postcode",
            "filename",
        ]
    )
    d = string.digits
    values = {
        "isbn": lambda: isbn(rng),
        "order": lambda: rng.choice(
            [
                f"#{_rand(rng, 10, d)}",
                f"{_rand(rng, 3, d)}-{_rand(rng, 7, d)}-{_rand(rng, 7, d)}",
                f"ORD-{rng.randint(2019, 2026)}-{_rand(rng, 6, d)}",
                _rand(rng, 8, d),
            ]
        ),
        "invoice": lambda: rng.choice(
            [
                f"INV-{rng.randint(2020, 2026)}-{_rand(rng, 5, d)}",
                f"{rng.randint(2020, 2026)}/{_rand(rng, 4, d)}",
                f"RE-{_rand(rng, 9, d)}",
            ]
        ),
        "version": lambda: (
            ".".join(str(rng.randint(0, 30)) for _ in range(3)) + f".{rng.randint(0, 9999)}"
        ),
        "rupiah": lambda: (
            "Rp " + f"{rng.randint(1000, 999999999):,}".replace(",", ".") + rng.choice(["", ",00"])
        ),
        "ean": lambda: ean(rng),
        "zip4": lambda: f"{_rand(rng, 5, d)}-{_rand(rng, 4, d)}",
        "tracking": lambda: rng.choice(
            [
                f"1Z{_rand(rng, 6, string.ascii_uppercase + d)}{_rand(rng, 10, d)}",
                "9400 " + " ".join(_rand(rng, 4, d) for _ in range(4)) + f" {_rand(rng, 2, d)}",
                _rand(rng, 12, d),
                f"JP{_rand(rng, 10, d)}",
                f"CGK{_rand(rng, 10, d)}",
            ]
        ),
        "date": lambda: rng.choice(
            [
                f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}",
                f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1990, 2030)}",
            ]
        ),
        "card_bad": lambda: card(rng, valid=False),
        "iban_bad": lambda: iban(rng, valid=False),
        "amount": lambda: rng.choice(
            [
                f"€ {rng.randint(1, 99999):,}".replace(",", ".") + f",{rng.randint(0, 99):02d}",
                f"${rng.randint(1, 999999):,}.{rng.randint(0, 99):02d}",
                f"IDR {rng.randint(10000, 99999999):,}".replace(",", "."),
            ]
        ),
        "time": lambda: (
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        ),
        "uuid": lambda: "-".join(_rand(rng, n, "0123456789abcdef") for n in (8, 4, 4, 4, 12)),
        "sha": lambda: _rand(rng, 40, "0123456789abcdef"),
        "mac": lambda: ":".join(_rand(rng, 2, "0123456789ABCDEF") for _ in range(6)),
        "postcode": lambda: rng.choice(
            [f"D-{_rand(rng, 5, d)}", _rand(rng, 5, d), f"SW1A {rng.randint(1, 9)}AA"]
        ),
        "filename": lambda: f"{rng.choice(['icon', 'logo', 'hero'])}@{rng.randint(2, 3)}x.png",
    }
    return values[kind](), kind
