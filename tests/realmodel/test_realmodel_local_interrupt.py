"""Ctrl-C and the in-process ``local`` provider with the packaged SmolLM2 (llama.cpp).

Every call is generated as llama.cpp's stream, so a second Ctrl-C stops a non-streamed call
between two tokens and the model answers the next call as before; the usage counted from the
stream is llama.cpp's own for the same request. A real ``multiagent run`` pressed twice while a
worker generates ends at once: exit 130, the thread interrupted and resumable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from multiagent import _interrupt
from multiagent._interrupt import StopRequested
from multiagent.models.local import LocalChatModel
from multiagent.models.local_engine import PACKAGED_MODEL_NAME, packaged_model_path
from multiagent.observability.live import read_live

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

#: A prompt SmolLM2 answers at length (greedy: it runs to any ``max_tokens`` given here).
LONG = [HumanMessage("Describe a bakery in detail.")]
TOOL = {
    "type": "function",
    "function": {
        "name": "submit_answer",
        "description": "Submit the answer.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        },
    },
}


def _model() -> LocalChatModel:
    """The packaged model, greedy: the same request gives the same tokens."""
    return LocalChatModel(
        model=PACKAGED_MODEL_NAME, model_path=str(packaged_model_path()), temperature=0.0, seed=7
    )


class _Watched:
    """``create_chat_completion`` of a real ``Llama`` that runs ``at_part[n]`` before its
    stream hands out part ``n``, and notes whether the stream ran to its finish."""

    def __init__(self, original: Any, at_part: dict[int, Any]) -> None:
        self.original = original
        self.at_part = at_part
        self.streamed = 0
        self.finished = False

    def __call__(self, **request: Any) -> Any:
        answer = self.original(**request)
        return self._watch(answer) if request.get("stream") else answer

    def _watch(self, parts: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            for part in parts:
                self.streamed += 1
                if self.streamed in self.at_part:
                    self.at_part[self.streamed]()
                self.finished = self.finished or bool(part["choices"][0].get("finish_reason"))
                yield part
        finally:
            close = getattr(parts, "close", None)
            if close is not None:
                close()


def test_a_second_ctrl_c_stops_a_real_non_streamed_generation_between_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model()
    llama = model.engine.llama
    # the first Ctrl-C changes nothing for a generation under way; the second stops it
    watched = _Watched(
        llama.create_chat_completion,
        at_part={
            2: lambda: monkeypatch.setattr(_interrupt, "_requested", True),
            6: lambda: monkeypatch.setattr(_interrupt, "_now", True),
        },
    )
    monkeypatch.setattr(llama, "create_chat_completion", watched)
    with pytest.raises(StopRequested):
        model.invoke(LONG, max_tokens=400)
    assert watched.streamed == 6  # no part after the one the stop met
    assert not watched.finished  # stopped between tokens, not run to its end
    assert not model.engine.lock.locked()

    monkeypatch.setattr(_interrupt, "_now", False)
    monkeypatch.setattr(_interrupt, "_requested", False)
    again = model.invoke(LONG, max_tokens=8)  # the model's state is whole
    assert again.usage_metadata is not None
    assert again.usage_metadata["output_tokens"] == 8
    assert again.response_metadata["finish_reason"] == "length"
    assert str(again.content).strip()


@pytest.mark.parametrize(
    ("case", "prompt", "max_tokens"),
    [
        ("stop", "Say hello in one short sentence.", 200),
        ("length", "Describe a bakery in detail.", 12),
        ("tool_calls", "What is two plus two? Submit the answer.", 120),
    ],
)
def test_a_local_answer_s_usage_is_llama_cpp_s_own(case: str, prompt: str, max_tokens: int) -> None:
    model = _model()
    messages = [HumanMessage(prompt)]
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    if case == "tool_calls":
        kwargs |= {"tools": [TOOL], "tool_choice": {"type": "function", "function": {
            "name": "submit_answer"}}}  # fmt: skip
    request = model._request(messages, None, kwargs)
    # a prompt met the first time is evaluated whole, later in part (the cached prefix): the
    # floating point differs, and so may a greedy answer; both replies compared are later ones
    model.engine.llama.create_chat_completion(**request)
    # llama.cpp's own reply to the same request, not streamed: its usage is its count
    own = model.engine.llama.create_chat_completion(**request)
    ours = model.invoke(messages, **kwargs)
    usage = own["usage"]
    assert ours.usage_metadata is not None
    assert (ours.usage_metadata["input_tokens"], ours.usage_metadata["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    [choice] = own["choices"]
    if case == "tool_calls":
        [call] = choice["message"]["tool_calls"]
        # arguments as llama.cpp wrote them: parsed, or kept as text when they do not parse
        # (the grammar lets a raw newline into a JSON string)
        [mine] = [*ours.tool_calls, *ours.invalid_tool_calls]
        assert mine["name"] == call["function"]["name"]
        arguments = call["function"]["arguments"]
        assert mine["args"] == (json.loads(arguments) if ours.tool_calls else arguments)
    else:
        assert choice["finish_reason"] == case  # the case is what it says
        assert ours.content == choice["message"]["content"]


def test_ctrl_c_twice_while_a_local_worker_generates_ends_the_run_at_once(
    isolated_env: Path,
) -> None:
    """Two workers on LangGraph's pool threads (a concurrency above the local layer's one, as
    under a server), where Python's ``KeyboardInterrupt`` never reaches: one generates, the
    other waits for the model."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MULTIAGENT_PROVIDER": "local",
           "MULTIAGENT_RATE_LIMIT__MAX_CONCURRENCY": "2",
           "MULTIAGENT_MODELS__MAX_OUTPUT_TOKENS__WORK": "1500",
           "MULTIAGENT_CACHE__COMPLETION_ENABLED": "false"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "multiagent", "run", "Plan a product launch for a small bakery",
         "--agents", "researcher,critic", "--thread", "twice", "--memory", "off"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    while not _streamed_by_a_worker(isolated_env):  # the live file has a worker's tokens
        assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    said = process.stderr.readline()
    assert said.startswith("Stopping: finishing 1 answer in flight;"), said
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    shown = json.loads(_cli(env, "threads", "show", "twice", "--json"))
    assert shown["status"] == "interrupted"
    # the worker generating at the second Ctrl-C stopped at its next token, and a worker still
    # waiting for the model started none: each either answered before the first Ctrl-C or
    # stopped (without the stop both answer, up to 1,500 tokens each)
    answered = [u for u in shown["values"]["usage"] if u["node"] == "work"]
    assert shown["errors"]
    assert set(shown["errors"]) == {"StopRequested()"}
    assert len(answered) + len(shown["errors"]) == 2
    shorter = {**env, "MULTIAGENT_MODELS__MAX_OUTPUT_TOKENS__WORK": "48"}
    again = _cli(shorter, "run", "--thread", "twice", "--resume", "--memory", "off", "--json")
    resumed = json.loads(again)
    assert resumed["status"] == "completed"


def _streamed_by_a_worker(home: Path) -> bool:
    """Whether a worker's streamed tokens reached the live file (written as they come)."""
    rows = read_live(
        home, "SELECT 1 FROM events WHERE kind LIKE 'stream:%' AND node = 'work' LIMIT 1"
    )
    return bool(rows)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "multiagent", *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return done.stdout
