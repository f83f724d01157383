"""PII redaction: what is replaced, what is left alone, and that it is counted."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from multiagent._metrics import get_metrics
from multiagent.models.redaction import redact_messages, redact_text


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        ("write to jane.doe+news@example.co.uk today", "email", "jane.doe+news@example.co.uk"),
        ("call +1 (415) 555-2671 now", "phone", "555-2671"),
        ("ring 020 7946 0958", "phone", "7946 0958"),
        ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),
        ("pay to DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx123", "secret", "sk-proj-abcdefghij"),
        ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abcdefghijk", "secret", "eyJhbGci"),
        ('config api_key="hunter2-secret"', "secret", "hunter2-secret"),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder(text: str, kind: str, secret: str) -> None:
    result = redact_text(text)
    assert secret not in result.text
    assert f"[REDACTED_{kind.upper()}]" in result.text
    assert result.counts[kind] == 1
    assert redact_text(result.text).total == 0  # redacting twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 we paid 1,234.56 for order 12345678",
        "card-like 1234 5678 9012 3456 fails its checksum",
        "version 3.11.4 and port 8080",
        "not an iban: DE00 1234 5678 9012 3456 78",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert redact_text(text).text == text


def test_messages_are_redacted_and_counted() -> None:
    metrics = get_metrics()
    before = metrics.counter("pii_redactions_total", labels={"kind": "email"})
    untouched = AIMessage(content="nothing here")
    messages = [
        HumanMessage(content=[{"type": "text", "text": "mail a@b.io"}, {"type": "image_url"}]),
        untouched,
        HumanMessage(content="and c@d.io or e@f.io"),
    ]
    redacted, counts = redact_messages(messages)
    assert counts["email"] == 3
    assert redacted[1] is untouched
    assert redacted[0].content[0] == {"type": "text", "text": "mail [REDACTED_EMAIL]"}
    assert redacted[0].content[1] == {"type": "image_url"}
    assert "c@d.io" not in redacted[2].text
    assert messages[2].text == "and c@d.io or e@f.io"  # the caller's messages are not changed
    after = metrics.counter("pii_redactions_total", labels={"kind": "email"})
    assert after - before == 3


@pytest.mark.parametrize(
    ("text", "kind", "raw"),
    [
        ("Mail an jürgen.müller@beispiel.de bitte", "email", "jürgen.müller@beispiel.de"),
        ("Tel. 089/1234567 (Büro)", "phone", "089/1234567"),
        ("WA saya 0812-3456-7890 ya", "phone", "0812-3456-7890"),
        ("call +62 21 5551234", "phone", "5551234"),
        ("token github_pat_11ABCDEFG0123456789abc_" + "x" * 59, "secret", "github_pat_11"),
        ("key sk_live_" + "a1B2" * 20 + ".", "secret", "a1B2a1B2"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret", "wJalrXU"),
        ("Passwort: Sommer2024!", "secret", "Sommer2024!"),
        ("kata sandi: Matahari99", "secret", "Matahari99"),
        ("DB_PASSWORD=hunter2xx", "secret", "hunter2xx"),
        ("export OPENAI_API_KEY=sk-abc123def456", "secret", "sk-abc123def456"),
        ("GITHUB_TOKEN: 'abcd1234efgh'", "secret", "abcd1234efgh"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXZhbHVl",
            "secret",
            "eyJzdWIiOiIxMjM0NSJ9",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "secret",
            "MIIEow",
        ),
        ("from 192.0.2.10 again", "ip", "192.0.2.10"),
        ("from 2001:db8::8a2e:370:7334 again", "ip", "2001:db8::8a2e:370:7334"),
        ("SSN 123-45-6789 on file", "ssn", "123-45-6789"),
        ("card 4111 1111 1111 1111 12/26 cvv 123", "card", "4111 1111 1111 1111"),
        ("Visa 4111-1111-1111-1111 0926", "card", "4111-1111-1111-1111"),
        ("room 12 5500 0000 0000 0004, thanks", "card", "5500 0000 0000 0004"),
    ],
)
def test_the_kinds_the_old_rules_missed_are_found(text: str, kind: str, raw: str) -> None:
    result = redact_text(text)
    assert raw not in result.text
    assert result.counts[kind] == 1, result


@pytest.mark.parametrize(
    "text",
    [
        "ISBN 978-3-16-148410-0 und EAN 4006381333931",
        "Total tagihan Rp 706.315.000 untuk pesanan 4829103746",
        "upgraded to version 10.0.19045.2965 and v1.2.3.4",
        "Ship to Springfield, IL 62704-1234 by 2024-01-15",
        "tracking 1Z999AA10123456784 and 9400 1000 0000 0000 0000 00",
        "Termin am 15.01.2024 um 14:30:00, Bestellung 302-1234567-8912345",
        "replace logo@2x.png; the password reset link expires",
        "The IBAN DE57 4102 4950 9737 9201 60 was rejected",
        "serial 41111111111111111111 and ORD-4111-1111-1111-1111",
    ],
)
def test_lookalikes_survive(text: str) -> None:
    assert redact_text(text).text == text


def test_pseudonyms_restore_only_through_their_own_run() -> None:
    from multiagent.safety import Pseudonymizer

    first, other = Pseudonymizer(), Pseudonymizer()
    redacted = first.redact("ann@example.org and ann@example.org, bob@example.org").text
    assert redacted == "<EMAIL_1> and <EMAIL_1>, <EMAIL_2>"
    assert first.restore("to <EMAIL_2>") == "to bob@example.org"
    assert other.restore("to <EMAIL_2>") == "to <EMAIL_2>"  # another run holds no mapping
    assert redact_text(redacted).text == redacted  # placeholders are not PII


def test_tool_call_arguments_are_redacted() -> None:
    call = {"name": "lookup", "args": {"who": "ann@example.org", "n": 3}, "id": "c1"}
    message = AIMessage(content="", tool_calls=[call])
    (redacted,), counts = redact_messages([message], record=False)
    assert isinstance(redacted, AIMessage)
    assert redacted.tool_calls[0]["args"] == {"who": "[REDACTED_EMAIL]", "n": 3}
    assert counts["email"] == 1
