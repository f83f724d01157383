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
