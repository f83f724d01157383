"""The estimator counts line by line and remembers lines, and the sum is tiktoken's own count."""

from __future__ import annotations

import string
from typing import Any

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from multiagent.models import tokens
from multiagent.models.tokens import ENCODING, count_tokens

_WHOLE = tiktoken.get_encoding(ENCODING)
# the characters that decide where pre-tokenisation pieces start and end
_ALPHABET = string.ascii_letters[:6] + "0123456789 \n\r\t.,-:'!#([" + "é中\u00a0\u2028\x1c"


def _whole(text: str) -> int:
    return len(_WHOLE.encode(text, disallowed_special=()))


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=120))
def test_line_by_line_equals_the_whole_count(text: str) -> None:
    assert count_tokens(text) == _whole(text)


def test_prompt_shapes_the_nodes_send_count_exactly() -> None:
    texts = [
        "Plan a launch\n\nTeam members you may assign:\n- researcher: finds facts\n- critic: x",
        "line one\n  indented\n\n\n- item\n\tTabbed\nlast   \n",
        "'s contraction\n's\n123456\n7\n!!\n\n?",
        "trailing newlines\n\n\n",
        "\nstarts with a break\nand <|endoftext|> as text\n",
    ]
    for text in texts:
        assert count_tokens(text) == _whole(text)


def test_a_repeated_line_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    task = "Plan a product launch for the corner bakery on Rue Saint-Honoré\n\n"
    encoded: list[str] = []

    class Spy:
        def encode_ordinary(self, text: str) -> list[int]:
            encoded.append(text)
            return _WHOLE.encode_ordinary(text)

    spy = Spy()
    monkeypatch.setattr(tokens, "_encoding", lambda: spy)
    tokens._count_memoised.cache_clear()
    prompts = [task + "Your part: research the market", task + "Your part: judge the risks"]
    try:
        counts = [count_tokens(prompt) for prompt in prompts]
    finally:
        tokens._count_memoised.cache_clear()
    assert counts == [_whole(prompt) for prompt in prompts]
    # the task is encoded for the first prompt only; each prompt's own line once
    assert encoded == [task, "Your part: research the market", "Your part: judge the risks"]


def test_a_line_is_counted_as_ordinary_text_without_encode_s_argument_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "a line not seen before <|endoftext|> 8f3a"
    expected = _whole(text)

    def checked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("encode called")

    monkeypatch.setattr(tiktoken.Encoding, "encode", checked)
    assert count_tokens(text) == expected
