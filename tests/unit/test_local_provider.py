"""The local provider's bad input, its settings layer, tool choices and the context window."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from multiagent import load_settings
from multiagent.errors import ConfigError
from multiagent.models.factory import build_chat_model
from multiagent.models.local_engine import check_gguf, is_model_path
from multiagent.models.local_messages import forced_tool_choice
from multiagent.models.pipeline import ModelPipeline
from multiagent.models.tokens import prompt_tokens
from multiagent.nodes.window import OMITTED, TOKENIZER_MARGIN, fit_to_window


def test_a_missing_gguf_is_named_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=r"nope\.gguf' does not exist"):
        check_gguf(missing)
    settings = load_settings(provider="local")
    with pytest.raises(ConfigError, match="does not exist"):
        build_chat_model("fast", settings, model=str(missing))


def test_a_file_that_is_not_gguf_is_refused_by_its_magic_bytes(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        check_gguf(fake)
    real_magic = tmp_path / "ok.gguf"
    real_magic.write_bytes(b"GGUF\x03\x00\x00\x00")
    check_gguf(real_magic)  # the magic is what is checked here; llama.cpp reads the rest


def test_model_names_that_are_paths() -> None:
    assert is_model_path("models/x.gguf")
    assert is_model_path("x.GGUF")
    assert not is_model_path("smollm2-135m-instruct")


def test_the_local_layer_prices_at_zero_and_runs_one_call_at_a_time() -> None:
    settings = load_settings(provider="local")
    models = settings.profile.models
    assert {models.fast, models.standard, models.premium} == {"smollm2-135m-instruct"}
    price = settings.profile.require_price("smollm2-135m-instruct")
    assert (price.input_per_mtok, price.output_per_mtok) == (0.0, 0.0)
    assert settings.profile.rate_limit.max_concurrency == 1
    assert models.context_window_tokens == 4096
    assert models.output_limit("validate") < models.output_limit("synthesize")
    assert load_settings().profile.models.context_window_tokens is None  # sim: unbounded


def test_model_local_path_is_priced_zero_with_the_local_layer_under_any_provider(
    tmp_path: Path,
) -> None:
    gguf = tmp_path / "any-name.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    pipeline = ModelPipeline(load_settings(), model=f"local:{gguf}", model_source="--model")
    assert pipeline.provider == "local"
    assert pipeline.price_of(str(gguf)).cost(1000, 1000) == 0.0
    profile = pipeline.settings.profile
    assert profile.rate_limit.max_concurrency == 1  # the local layer, though loaded for sim
    assert profile.models.context_window_tokens == 4096
    # under MULTIAGENT_PROVIDER=local, a GGUF named for a tier is free too
    local = load_settings(provider="local")
    tiers = local.profile.models.model_copy(update={"standard": str(gguf)})
    renamed = local.model_copy(
        update={"profile": local.profile.model_copy(update={"models": tiers})}
    )
    assert ModelPipeline(renamed).price_of(str(gguf)).cost(10, 10) == 0.0
    # a remote model keeps needing its price
    with pytest.raises(ConfigError, match="has no price"):
        ModelPipeline(load_settings(), model="openai:unpriced-model", model_source="--model")


def test_forced_tool_choices_become_llama_cpp_dicts() -> None:
    tools = [{"type": "function", "function": {"name": "submit_plan", "parameters": {}}}]
    forced = {"type": "function", "function": {"name": "submit_plan"}}
    assert forced_tool_choice(tools, "submit_plan") == forced
    assert forced_tool_choice(tools, "any") == forced
    assert forced_tool_choice(tools, "auto") == "auto"
    assert forced_tool_choice(tools, "none") == "none"


def test_a_long_transcript_keeps_its_task_and_latest_turns_within_the_window() -> None:
    turns = "\n\n".join(f"[round {i}, critic] point number {i} " + "word " * 40 for i in range(200))
    prompt = f"Opening hours for a bakery\n\nTranscript so far:\n{turns}"
    messages = [SystemMessage("You are the critic."), HumanMessage(prompt)]
    fitted = fit_to_window(messages, window=1024, reserve=128)
    assert prompt_tokens(fitted) * TOKENIZER_MARGIN <= 1024 - 128
    text = str(fitted[1].text)
    assert text.startswith("Opening hours for a bakery")
    assert OMITTED.strip() in text
    assert "point number 199" in text  # the latest turn stays
    assert "point number 3 " not in text  # the oldest went
    assert fitted[0].text == "You are the critic."
    assert fit_to_window(messages, window=None, reserve=128) == messages


def test_a_long_tool_loop_drops_its_oldest_rounds_whole_and_keeps_the_task() -> None:
    def round_(n: int, result: str) -> list[BaseMessage]:
        call = {"name": "calculator", "args": {"expression": f"{n}+{n}"}, "id": f"c{n}"}
        return [AIMessage("", tool_calls=[call]), ToolMessage(result, tool_call_id=f"c{n}")]

    task = HumanMessage("Price the new menu\n\nYour part of this task: the costs")
    messages = [SystemMessage("You are the analyst."), task, *round_(1, "2 " * 3000)]
    messages += round_(2, "4")
    fitted = fit_to_window(messages, window=2000, reserve=256)
    assert prompt_tokens(fitted) * TOKENIZER_MARGIN <= 2000 - 256
    # the task stays, and no tool result is left without the call it answers
    assert fitted == [messages[0], task, *messages[-2:]]


def test_a_window_that_cannot_hold_the_smallest_prompt_is_a_config_error() -> None:
    messages = [SystemMessage("You are the critic. " * 50), HumanMessage("Check this.")]
    with pytest.raises(ConfigError, match="cannot hold the smallest prompt"):
        fit_to_window(messages, window=64, reserve=48)


def test_the_local_bench_report_shows_ratio_workflows_and_structured_shares() -> None:
    from multiagent.bench.local import LocalBench, render_local

    result = LocalBench(prompts=4, max_tokens=32, direct_tokens=100, direct_s=2.0,
                        framework_tokens=100, framework_s=2.05,
                        pair_ratios=[0.9, 0.99, 1.02])  # fmt: skip
    result.workflows = {"run": {"runs": 2, "completed": 2, "statuses": [], "median_s": 9.5,
                                "max_s": 10.1, "calls": 8, "output_tokens": 700}}  # fmt: skip
    result.structured = {"plan": {"first_try": 3, "fallback": 0, "after_repair": 1, "failed": 0}}
    text = render_local(result)
    assert "**0.990×** as the median over the 3 prompts" in text
    assert "0.976× from the totals" in text
    assert "| run | 2 | 2 | 9.5 | 10.1 | 8 | 700 |" in text
    assert "| plan | 4 | 3 (75%) | 0 (0%) | 1 (25%) | 0 (0%) |" in text
    assert result.as_dict()["ratio"] == 0.9756
