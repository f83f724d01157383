"""llama-cpp-python's server started without ``--interrupt_requests false`` cuts a stream short
when another request arrives: the cut stream is a failed call, never an answer. A prompt over
its context window ends the stream before its first chunk: the error names the window."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from multiagent.models.ledger import RunLedger
from multiagent.models.openai_compat import StreamCutError
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.retry import RetryPolicy
from multiagent.policies import load_settings
from tests.realmodel.conftest import running_llama_server

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


@pytest.fixture(scope="module")
def interrupting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server with its defaults: a stream ends at once when another request waits."""
    with running_llama_server(tmp_path_factory.mktemp("llama-default")) as url:
        yield url


def test_a_stream_the_server_cut_for_the_next_request_is_an_error(
    interrupting_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{interrupting_server}/v1")
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=1))
    ledger = RunLedger()
    model: Any = pipeline.model_for("standard", agent="a", ledger=ledger)
    long = model.bind(max_tokens=400)  # far longer than the second call takes to arrive
    prompt = [HumanMessage("Write a long story about a bakery.")]

    stream = iter(long.stream(prompt))
    while not str(next(stream).content):  # the first answer is being written
        pass
    second = threading.Thread(target=model.bind(max_tokens=8).invoke, args=(prompt,))
    second.start()
    with pytest.raises(StreamCutError):
        for _ in stream:
            pass
    second.join()

    outcomes = sorted(record.outcome for record in ledger.calls)
    assert outcomes == ["error", "ok"], ledger.calls


def test_a_streamed_prompt_over_the_servers_window_names_the_window(
    llama_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIAGENT_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{llama_server}/v1")
    settings = load_settings(provider="openai", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings, retry=RetryPolicy(attempts=1))
    ledger = RunLedger()
    model: Any = pipeline.model_for("standard", agent="a", ledger=ledger)
    too_long = [HumanMessage("fox " * 6000)]  # over the 4,096 tokens the server holds

    with pytest.raises(StreamCutError, match="context window") as raised:
        for _ in model.bind(max_tokens=8).stream(too_long):
            pass

    assert "models.context_window_tokens" in str(raised.value)
    assert [record.outcome for record in ledger.calls] == ["error"]
