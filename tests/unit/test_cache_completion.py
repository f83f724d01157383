"""The completion cache: keys, values, expiry, and counters exact across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration

from multiagent.models.completion_cache import CompletionCache, cache_key, normalise_prompt


def prompt_of(*messages: object) -> str:
    return dumps(list(messages))


def generation(text: str) -> list[ChatGeneration]:
    message = AIMessage(
        content=text,
        usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        response_metadata={"model_name": "gpt-4o-mini"},
        tool_calls=[{"name": "verdict", "args": {"ok": True}, "id": "call_1"}],
    )
    return [ChatGeneration(message=message, generation_info={"finish_reason": "stop"})]


def test_miss_then_hit_returns_the_stored_generation(tmp_path: Path) -> None:
    cache = CompletionCache(tmp_path / "c")
    prompt = prompt_of(SystemMessage("be brief"), HumanMessage("hello"))
    assert cache.lookup(prompt, "model=a") is None
    cache.update(prompt, "model=a", generation("hi there"))
    found = cache.lookup(prompt, "model=a")
    assert found is not None
    message = found[0].message  # type: ignore[attr-defined]
    assert isinstance(message, AIMessage)
    assert message.content == "hi there"
    assert message.tool_calls[0]["args"] == {"ok": True}
    assert message.usage_metadata == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert found[0].generation_info == {"finish_reason": "stop"}
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert stats.hit_rate == 0.5


def test_keys_ignore_ids_metadata_and_outer_whitespace_but_not_parameters() -> None:
    history_a = AIMessage(content="earlier", id="run-1", response_metadata={"x": 1})
    history_b = AIMessage(
        content="earlier ",
        id="run-2",
        usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
    )
    a = prompt_of(HumanMessage("q", id="1"), history_a, HumanMessage("next"))
    b = prompt_of(HumanMessage("q", id="2"), history_b, HumanMessage("  next"))
    assert normalise_prompt(a) == normalise_prompt(b)
    assert cache_key(a, "model=a temp=0") == cache_key(b, "model=a temp=0")
    assert cache_key(a, "model=a temp=0") != cache_key(a, "model=a temp=1")
    assert cache_key(a, "model=a") != cache_key(prompt_of(HumanMessage("other")), "model=a")
    assert cache_key(prompt_of(HumanMessage("q")), "m") != cache_key(prompt_of(AIMessage("q")), "m")


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    cache = CompletionCache(tmp_path / "c", ttl_s=0.2)
    prompt = prompt_of(HumanMessage("short-lived"))
    cache.update(prompt, "m", generation("x"))
    assert cache.lookup(prompt, "m") is not None
    time.sleep(0.35)
    assert cache.lookup(prompt, "m") is None


def test_counters_survive_a_restart_and_clear_keeps_them(tmp_path: Path) -> None:
    first = CompletionCache(tmp_path / "c")
    prompt = prompt_of(HumanMessage("kept"))
    first.update(prompt, "m", generation("x"))
    first.lookup(prompt, "m")
    first.lookup(prompt_of(HumanMessage("absent")), "m")
    first.close()
    second = CompletionCache(tmp_path / "c")
    assert (second.stats().hits, second.stats().misses) == (1, 1)
    second.clear()
    assert second.stats().entries == 0
    assert second.stats().lookups == 2
    second.clear(counters=True)
    assert second.stats().lookups == 0


_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage
    from multiagent.models.completion_cache import CompletionCache

    directory, worker, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    cache = CompletionCache(directory)
    for i in range(rounds):
        stored = dumps([HumanMessage(f"stored {i % 5}")])
        absent = dumps([HumanMessage(f"absent {worker} {i}")])
        assert cache.lookup(stored, "m") is not None
        assert cache.lookup(absent, "m") is None
    cache.close()
    """
)


def test_counters_are_exact_across_two_processes(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    cache = CompletionCache(directory)
    for i in range(5):
        cache.update(prompt_of(HumanMessage(f"stored {i}")), "m", generation(f"answer {i}"))
    cache.flush()  # answers are written behind: other processes see them once written
    rounds = 150
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(directory), name, str(rounds)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    stats = cache.stats()
    assert stats.hits == 2 * rounds
    assert stats.misses == 2 * rounds
    assert stats.hit_rate == 0.5


def test_the_pipeline_key_is_the_key_langchains_cache_path_gave(tmp_path: Path) -> None:
    # entries written before the pipeline looked the cache up itself must still be found
    from langchain_core.messages import ToolMessage

    from multiagent.models._cache_lookup import call_key
    from multiagent.models.completion_cache import messages_key
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.models.pipeline_model import PipelineChatModel
    from multiagent.policies import load_settings

    model = ModelPipeline(load_settings(home=tmp_path)).model_for("fast", agent="a")
    assert isinstance(model, PipelineChatModel)
    messages = [
        SystemMessage("  be brief "),
        HumanMessage("q", id="h1", name="user"),
        AIMessage(content="", tool_calls=[{"name": "look", "args": {"q": [1, 2]}, "id": "c1"}]),
        ToolMessage(content="found", tool_call_id="c1"),
        HumanMessage([{"type": "text", "text": "blocks"}]),
    ]
    tools = {"tools": [{"type": "function", "function": {"name": "look"}}], "tool_choice": "look"}
    for stop, kwargs in ((None, {}), (["\n"], tools)):
        bare = [m.model_copy(update={"id": None}) for m in messages]
        langchain = cache_key(dumps(bare), model._get_llm_string(stop=stop, **kwargs))
        assert call_key(model, messages, stop, dict(kwargs)) == langchain
    assert messages_key(messages[:2], "m") != messages_key(messages[:1], "m")
