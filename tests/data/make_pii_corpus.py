"""Write the labelled PII corpus ``pii_corpus.jsonl`` (run once; the seed makes it the same).

    python tests/data/make_pii_corpus.py

Each line: ``{"id", "lang", "split", "text", "spans": [{"start", "end", "kind"}], "lookalikes"}``.
A text is one to four sentences in English, Indonesian or German, drawn from frames of
different shapes (chat, e-mail, ticket, log line, config, CSV, JSON) that carry zero to three
pieces of PII and zero to three look-alikes (ISBNs, order numbers, versions, amounts, EAN-13,
ZIP+4, tracking numbers, dates, bad checksums...). ``split`` is ``dev`` or ``holdout``, drawn
from the seed: the detector was worked on against ``dev``. ``holdout`` was looked at once, and
its misses led to two general rules (four-part versions and postal-code labels are not phones),
so a third part, ``blind``, drawn from another seed, was added and measured as it came: recall
100% for every kind, precision 95.4% for secrets and 93.2% for phones (ZIP+4 codes after a state
and a key name read as a password). Two more general rules followed (the ZIP+4 shape needs a
phone word to be a phone; a value ending in ``:`` is a key, not a password), so no part is blind
any more: a later change to the detector should add a part from a new seed first.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pii_values as v

SEED = 20261126
COUNT = 620
BLIND_SEED = 7_331_977
BLIND_COUNT = 300
OUT = Path(__file__).resolve().parent / "pii_corpus.jsonl"

# frames: "{x}" is the one slot; the first list is the kind's, per language
FRAMES: dict[str, dict[str, list[str]]] = {
    "email": {
        "en": [
            "Please send the signed contract to {x} by Friday.",
            "You can reach me at {x} if anything changes.",
            "From: {x}",
            "cc {x} — she owns the migration.",
            "Reply-To: <{x}>",
            "my email is {x}, thanks!",
        ],
        "id": [
            "Silakan kirim dokumen ke {x} sebelum Jumat.",
            "Email saya {x}, tolong dibalas ya.",
            "Hubungi tim kami lewat {x} untuk info lebih lanjut.",
            "Kirim invoice ke alamat {x} saja.",
        ],
        "de": [
            "Bitte schicken Sie die Unterlagen an {x}.",
            "Meine E-Mail-Adresse lautet {x}.",
            "Rückfragen gerne an {x} richten.",
            "Von: {x}",
        ],
    },
    "phone": {
        "en": [
            "Call me on {x} after 6pm.",
            "Phone: {x}",
            "If the server goes down again, ring {x}.",
            "My new mobile number is {x}.",
            "Contact the front desk at {x} for a late check-in.",
        ],
        "id": [
            "Silakan hubungi saya di {x} ya.",
            "No. HP: {x}",
            "WA saya {x}, kabari kalau sudah sampai.",
            "Untuk reservasi, telepon {x}.",
            "Nomor kantor kami {x} (jam kerja).",
        ],
        "de": [
            "Rufen Sie mich bitte unter {x} zurück.",
            "Tel.: {x}",
            "Ich bin mobil unter {x} erreichbar.",
            "Die Hotline {x} ist werktags besetzt.",
            "Telefonnummer der Praxis: {x}",
        ],
    },
    "card": {
        "en": [
            "Charge it to my card {x}, expiry 09/27.",
            "Card number: {x}",
            "The refund went to card {x}.",
        ],
        "id": [
            "Bayar pakai kartu kredit {x} saja.",
            "Nomor kartu: {x}",
            "Tolong refund ke kartu {x}.",
        ],
        "de": [
            "Bitte belasten Sie meine Kreditkarte {x}.",
            "Kartennummer: {x}",
            "Die Karte {x} wurde gesperrt.",
        ],
    },
    "iban": {
        "en": [
            "Please wire the deposit to IBAN {x}.",
            "Our bank details: IBAN {x}, BIC DEUTDEFF.",
            "Account {x} was credited.",
        ],
        "id": ["Transfer ke IBAN {x} untuk pembayaran dari Eropa.", "Rekening tujuan (IBAN): {x}"],
        "de": [
            "Bitte überweisen Sie den Betrag auf {x}.",
            "IBAN: {x}",
            "Die Miete geht an IBAN {x} (Kontoinhaber: Hausverwaltung).",
        ],
    },
    "ssn": {
        "en": [
            "My SSN is {x}.",
            "SSN: {x}",
            "The form lists social security number {x} for the applicant.",
        ],
        "id": ["Nomor SSN karyawan AS itu {x}.", "SSN klien: {x}"],
        "de": ["Die US-Sozialversicherungsnummer lautet {x}.", "SSN des Mitarbeiters: {x}"],
    },
    "ip": {
        "en": [
            "Failed login from {x} at midnight.",
            "The database listens on {x}.",
            "Blocked {x} after 50 attempts.",
        ],
        "id": ["Server produksi ada di {x}.", "Login gagal dari alamat IP {x}."],
        "de": ["Der Zugriff kam von {x}.", "Bitte die IP {x} in die Firewall eintragen."],
    },
    "secret": {
        "en": [
            "Here is the key: {x}",
            "I accidentally pasted {x} into the channel.",
            "Config:\n{x}\n",
            "Use this token for the CI job: {x}",
        ],
        "id": ["Ini kuncinya: {x}", "Token untuk deploy: {x}", "Konfigurasi:\n{x}\n"],
        "de": ["Hier der Schlüssel: {x}", "Zugangsdaten:\n{x}\n", "Das Token lautet {x}"],
    },
}
LOOKALIKE_FRAMES: dict[str, dict[str, list[str]]] = {
    "en": {
        "isbn": ["The book (ISBN {x}) is back in stock."],
        "order": ["Order {x} has shipped.", "Your order number is {x}."],
        "invoice": ["Invoice {x} is overdue."],
        "version": ["We upgraded to version {x} last night.", "Build {x} fixes the crash."],
        "rupiah": ["The quote came to {x}."],
        "ean": ["Barcode {x} scans as the blue mug."],
        "zip4": ["Ship to Springfield, IL {x}."],
        "tracking": ["Tracking number: {x}"],
        "date": ["The meeting moved to {x}."],
        "card_bad": ["Test value {x} should fail validation."],
        "iban_bad": ["The IBAN {x} was rejected as invalid."],
        "amount": ["Total due: {x}."],
        "time": ["The job started at {x} UTC."],
        "uuid": ["Request id {x} failed."],
        "sha": ["Reverted commit {x}."],
        "mac": ["The printer's MAC is {x}."],
        "postcode": ["Postcode {x}."],
        "filename": ["Replace {x} with the new logo."],
    },
    "id": {
        "isbn": ["Buku dengan ISBN {x} sudah tersedia."],
        "order": ["Pesanan {x} sudah dikirim.", "Nomor pesanan Anda {x}."],
        "invoice": ["Faktur {x} belum dibayar."],
        "version": ["Aplikasi sudah diperbarui ke versi {x}."],
        "rupiah": ["Total tagihan {x}.", "Harga paket ini {x} per bulan."],
        "ean": ["Kode barcode {x} tidak terbaca."],
        "zip4": ["Alamat pengiriman di AS: ZIP {x}."],
        "tracking": ["No. Resi: {x}", "Cek resi {x} di situs kurir."],
        "date": ["Rapat diundur ke {x}."],
        "card_bad": ["Nomor uji {x} harus ditolak."],
        "iban_bad": ["IBAN {x} ditolak bank."],
        "amount": ["Sisa saldo {x}."],
        "time": ["Backup berjalan pukul {x}."],
        "uuid": ["ID permintaan {x} gagal."],
        "sha": ["Commit {x} sudah di-merge."],
        "mac": ["MAC address router: {x}"],
        "postcode": ["Kode pos {x}."],
        "filename": ["Ganti {x} dengan logo baru."],
    },
    "de": {
        "isbn": ["Das Buch (ISBN {x}) ist wieder lieferbar."],
        "order": ["Ihre Bestellung {x} wurde versandt.", "Bestellnummer: {x}"],
        "invoice": ["Rechnung {x} ist fällig.", "Rechnungsnr. {x}"],
        "version": ["Wir haben auf Version {x} aktualisiert."],
        "rupiah": ["Der Preis in Jakarta lag bei {x}."],
        "ean": ["EAN {x} gehört zum Artikel 4711."],
        "zip4": ["Lieferadresse in den USA: ZIP {x}."],
        "tracking": ["Sendungsnummer: {x}"],
        "date": ["Der Termin ist am {x}."],
        "card_bad": ["Die Testnummer {x} muss abgelehnt werden."],
        "iban_bad": ["Die IBAN {x} ist ungültig."],
        "amount": ["Gesamtbetrag: {x}."],
        "time": ["Der Lauf begann um {x} Uhr."],
        "uuid": ["Anfrage {x} schlug fehl."],
        "sha": ["Commit {x} wurde zurückgenommen."],
        "mac": ["MAC-Adresse: {x}"],
        "postcode": ["PLZ {x}."],
        "filename": ["Bitte {x} durch das neue Logo ersetzen."],
    },
}
FILLER = {
    "en": [
        "Thanks for your patience.",
        "Let me know if you need anything else.",
        "Best regards, the support team",
        "The password reset link expires in 24 hours.",
        "We will review the ticket tomorrow.",
        "Hi all,",
    ],
    "id": [
        "Terima kasih atas bantuannya.",
        "Mohon ditunggu kabar selanjutnya.",
        "Salam, tim dukungan",
        "Kata sandi Anda telah berhasil diubah.",
        "Selamat pagi, Bapak/Ibu.",
        "Tiket ini akan kami proses besok.",
    ],
    "de": [
        "Vielen Dank für Ihre Geduld.",
        "Mit freundlichen Grüßen",
        "Passwort vergessen? Dann klicken Sie auf den Link.",
        "Wir melden uns morgen.",
        "Hallo zusammen,",
        "Das Ticket wird morgen bearbeitet.",
    ],
}
# shapes that carry several values at once: a log line, CSV row, JSON record
STRUCTURED: list[tuple[str, list[str]]] = [
    ('{{"user": "{a}", "phone": "{b}", "order": "{c}"}}', ["email", "phone", "lookalike"]),
    ("{a},{b},{c}", ["email", "iban", "lookalike"]),
    (
        "2026-03-04T10:15:00Z WARN auth: login failed user={a} src={b} req={c}",
        ["email", "ip", "lookalike"],
    ),
    ("name;email;tel\nB. Santoso;{a};{b}", ["email", "phone"]),
]
MAKERS: dict[str, Callable[[random.Random], str]] = {
    "email": v.email,
    "phone": v.phone,
    "card": v.card,
    "iban": v.iban,
    "ssn": v.ssn,
    "ip": v.ip,
}


def _value(rng: random.Random, kind: str) -> tuple[str, str, int]:
    """``(text to insert, value to label, offset of the value inside that text)``."""
    if kind == "secret":
        value, carrier = v.secret(rng)
        return carrier, value, carrier.index(value)
    value = MAKERS[kind](rng)
    return value, value, 0


def _sentence(
    rng: random.Random,
    lang: str,
    parts: list[str],
    spans: list[dict[str, object]],
    lookalikes: list[str],
    *,
    pii: bool,
) -> None:
    base = sum(len(p) + 1 for p in parts)
    if pii:
        kind = rng.choice(list(FRAMES))
        frame = rng.choice(FRAMES[kind][lang])
        carrier, value, offset = _value(rng, kind)
        start = base + frame.index("{x}") + offset
        spans.append({"start": start, "end": start + len(value), "kind": kind})
        parts.append(frame.replace("{x}", carrier))
    else:
        value, kind = v.lookalike(rng)
        frame = rng.choice(LOOKALIKE_FRAMES[lang][kind])
        lookalikes.append(kind)
        parts.append(frame.replace("{x}", value))


def _structured(rng: random.Random, spans: list[dict[str, object]], lookalikes: list[str]) -> str:
    frame, kinds = rng.choice(STRUCTURED)
    text = ""
    rest = frame
    for slot, kind in zip("abc", kinds, strict=False):
        head, _, rest = rest.partition("{" + slot + "}")
        text += head.replace("{{", "{").replace("}}", "}")
        if kind == "lookalike":
            value, name = v.lookalike(rng)
            lookalikes.append(name)
        else:
            value = MAKERS[kind](rng)
            spans.append({"start": len(text), "end": len(text) + len(value), "kind": kind})
        text += value
    return text + rest.replace("{{", "{").replace("}}", "}")


def make_corpus(
    seed: int = SEED, count: int = COUNT, *, split: str | None = None
) -> list[dict[str, object]]:
    """``count`` labelled texts drawn from ``seed``, all in ``split`` when given."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for index in range(count):
        lang = ("en", "id", "de")[index % 3]
        spans: list[dict[str, object]] = []
        lookalikes: list[str] = []
        if rng.random() < 0.08:
            text = _structured(rng, spans, lookalikes)
        else:
            parts: list[str] = []
            shape = rng.random()  # a quarter hold no PII at all: look-alikes and filler only
            n_pii = 0 if shape < 0.25 else rng.choice([1, 1, 2, 3])
            kinds = [True] * n_pii + [False] * rng.choice([0, 1, 1, 2, 3])
            rng.shuffle(kinds)
            if not kinds or rng.random() < 0.4:
                parts.append(rng.choice(FILLER[lang]))
            for pii in kinds:
                _sentence(rng, lang, parts, spans, lookalikes, pii=pii)
            if rng.random() < 0.3:
                parts.append(rng.choice(FILLER[lang]))
            text = " ".join(parts)
        part = "holdout" if rng.random() < 0.35 else "dev"
        rows.append(
            {
                "id": f"{seed}-{index}",
                "lang": lang,
                "split": split or part,
                "text": text,
                "spans": spans,
                "lookalikes": lookalikes,
            }
        )
    return rows


def main() -> None:
    """Write the corpus next to this script."""
    rows = make_corpus() + make_corpus(BLIND_SEED, BLIND_COUNT, split="blind")
    with OUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} texts to {OUT.name}")


if __name__ == "__main__":
    main()
