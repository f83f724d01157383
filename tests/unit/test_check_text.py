"""The text rule: control characters and undecodable bytes are refused at their place."""

from __future__ import annotations

import unicodedata

import pytest

from multiagent import _inputs
from multiagent._inputs import check_text
from multiagent.errors import UsageError


def _refused(char: str) -> bool:
    """The rule, character by character, as check_text states it."""
    if char in "\t\n\r":
        return False
    return 0xDC80 <= ord(char) <= 0xDCFF or unicodedata.category(char) in ("Cc", "Cs")


def test_every_refused_character_is_named_at_its_place() -> None:
    for point in [*range(0x3000), *range(0xD700, 0xE100), 0xFEFF, 0x10FFFF]:
        char = chr(point)
        text = f"ok é\n{char}x\x07"
        if not _refused(char):
            with pytest.raises(UsageError, match="U\\+0007 at character 7"):
                check_text(text, source="the task")
            continue
        with pytest.raises(UsageError) as raised:
            check_text(text, source="the task")
        if 0xDC80 <= point <= 0xDCFF:
            assert f"(byte 0x{point - 0xDC00:02x} at character 5)" in str(raised.value)
        else:
            assert f"U+{point:04X} at character 5;" in str(raised.value)


def test_text_without_a_refused_character_is_not_read_character_by_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoLookups:
        @staticmethod
        def category(char: str) -> str:
            raise AssertionError(f"looked up {char!r}")

    monkeypatch.setattr(_inputs, "unicodedata", NoLookups)
    text = "Plan a product launch\n\tfor the bakery in Zürich — 中文 \u2028 too\r\n"
    assert check_text(text, source="the task") is text
