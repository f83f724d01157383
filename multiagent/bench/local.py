"""``multiagent bench local``: the framework's tokens/s on a real model against llama.cpp's own.

The same prompts, the same output bound, greedy sampling with a fixed seed: straight through
``Llama.create_chat_completion`` (direct), and through the full pipeline (the ``local``
provider's model from :class:`~multiagent.models.pipeline.ModelPipeline`: redaction, cache
off, backpressure, retry, ledger). Tokens are llama.cpp's own counts; after one unmeasured
call per side, the sides take turns going first, prompt by prompt, so a busy machine slows
both alike, and llama.cpp's prompt cache is reset before each call (the second side would
otherwise skip the prompt the first one evaluated). Then each workflow runs once on
the packaged model, timed, with how many of its calls there were.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

_OFF = ("--memory", "off")

PROMPTS = (
    "Describe a small bakery's morning routine.",
    "List three ways to keep bread fresh.",
    "Explain why sourdough tastes sour.",
    "Write a short welcome note for bakery customers.",
    "Give two tips for pricing pastries.",
    "Summarise what a baker does before dawn.",
)


@dataclass
class LocalBench:
    """Measured figures."""

    prompts: int
    max_tokens: int
    direct_tokens: int = 0
    direct_s: float = 0.0
    framework_tokens: int = 0
    framework_s: float = 0.0
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    structured: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per prompt: framework tokens/s over direct tokens/s of the two adjacent calls.
    pair_ratios: list[float] = field(default_factory=list)
    #: Cores and the 1-minute load average when the bench started (other jobs slow both sides).
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_average: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))

    @property
    def ratio(self) -> float:
        """Framework tokens/s over direct tokens/s."""
        direct = self.direct_tokens / self.direct_s if self.direct_s else 0.0
        framework = self.framework_tokens / self.framework_s if self.framework_s else 0.0
        return framework / direct if direct else 0.0

    @property
    def median_pair_ratio(self) -> float:
        """The median of :attr:`pair_ratios`: robust to a burst of other jobs on the machine,
        which slows one call of a pair and moves the totals' ratio either way."""
        return statistics.median(self.pair_ratios) if self.pair_ratios else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            **asdict(self),
            "ratio": round(self.ratio, 4),
            "median_pair_ratio": round(self.median_pair_ratio, 4),
        }


def run_local_bench(*, rounds: int = 2, max_tokens: int = 64, workflows: bool = True) -> LocalBench:
    """Measure direct vs framework tokens/s (``rounds`` passes over the prompts), then workflows."""
    from langchain_core.messages import HumanMessage

    from multiagent.models.local_messages import as_openai_messages
    from multiagent.models.pipeline import ModelPipeline
    from multiagent.policies import load_settings

    settings = load_settings(provider="local", overrides={"cache.completion_enabled": False})
    pipeline = ModelPipeline(settings)
    model: Any = pipeline.model_for("fast", agent="bench")
    engine = model.provider_model.engine
    result = LocalBench(prompts=len(PROMPTS) * rounds, max_tokens=max_tokens)
    options = {"max_tokens": max_tokens, "temperature": 0.0, "seed": 7}

    def direct(messages: list[Any]) -> tuple[int, float]:
        with engine.lock:
            engine.llama.reset()  # no reuse of the other side's prompt in llama.cpp's cache
            began = time.perf_counter()
            reply = engine.llama.create_chat_completion(
                messages=as_openai_messages(messages), **options
            )
            return int(reply["usage"]["completion_tokens"]), time.perf_counter() - began

    def framework(messages: list[Any]) -> tuple[int, float]:
        with engine.lock:
            engine.llama.reset()
        began = time.perf_counter()
        answer = model.invoke(messages, **options)
        seconds = time.perf_counter() - began
        return int((answer.usage_metadata or {}).get("output_tokens", 0)), seconds

    warm = [HumanMessage(PROMPTS[0])]
    direct(warm), framework(warm)  # first calls pay for buffers and threads: not measured
    for number, prompt in enumerate(PROMPTS * rounds):
        messages = [HumanMessage(prompt)]
        # the sides take turns at going first, so neither always meets a warmer machine
        sides = (direct, framework) if number % 2 == 0 else (framework, direct)
        speeds: dict[str, float] = {}
        for side in sides:
            tokens, seconds = side(messages)
            speeds[side.__name__] = tokens / seconds if seconds else 0.0
            if side is direct:
                result.direct_tokens += tokens
                result.direct_s += seconds
            else:
                result.framework_tokens += tokens
                result.framework_s += seconds
        if speeds["direct"]:
            result.pair_ratios.append(speeds["framework"] / speeds["direct"])
    if workflows:
        result.workflows, result.structured = _workflows()
    return result


#: Each workflow as a user runs it, and how many times (the structured calls are counted over
#: all of them: the planner's plan, the moderator's judgement, each validator's verdict).
WORKFLOWS: dict[str, tuple[tuple[str, ...], int]] = {
    "run": (("run", "Plan a product launch for a small bakery", "--no-stream", *_OFF), 3),
    "meeting": (("meeting", "Opening hours for a bakery", "--rounds", "1", *_OFF), 2),
    "validate": (("validate", "Bread rises because yeast makes gas."), 3),
}


@contextmanager
def _local_env() -> Iterator[None]:
    """The ``local`` provider, caches off and a scratch data directory, then restored."""
    import os
    import tempfile

    values = {
        "MULTIAGENT_PROVIDER": "local",
        # every run must reach the model: a repeated workflow would be answered from the caches
        "MULTIAGENT_CACHE__COMPLETION_ENABLED": "false",
        "MULTIAGENT_CACHE__ANALYSIS_ENABLED": "false",
    }
    saved = {k: os.environ.get(k) for k in (*values, "MULTIAGENT_HOME")}
    with tempfile.TemporaryDirectory(prefix="bench-local-") as home:
        os.environ.update(values, MULTIAGENT_HOME=home)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _workflows() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each workflow through the CLI in this process (the model is loaded once, as a long-lived
    process would), timed; and how the structured calls of all of them ended, per node kind."""
    import json

    from typer.testing import CliRunner

    from multiagent.cli import app
    from multiagent.models.structured import STRUCTURED_COUNTS

    runner = CliRunner()
    STRUCTURED_COUNTS.reset()
    out: dict[str, dict[str, Any]] = {}
    with _local_env():
        for name, (args, times) in WORKFLOWS.items():
            seconds: list[float] = []
            statuses: list[str] = []
            calls = tokens = 0
            for _ in range(times):
                began = time.perf_counter()
                done = runner.invoke(app, [*args, "--json"])
                seconds.append(time.perf_counter() - began)
                text = done.stdout
                try:
                    doc = json.loads(text[text.index("{") :])
                except ValueError:
                    doc = {"status": f"exit {done.exit_code}"}
                statuses.append(str(doc.get("status")))
                usage = doc.get("usage") or {}
                calls += int(usage.get("calls", 0))
                tokens += int(usage.get("output_tokens", 0))
            out[name] = {
                "runs": times,
                "completed": statuses.count("completed"),
                "statuses": statuses,
                "median_s": round(statistics.median(seconds), 2),
                "max_s": round(max(seconds), 2),
                "calls": calls,
                "output_tokens": tokens,
            }
    return out, STRUCTURED_COUNTS.snapshot()


def render_local(result: LocalBench) -> str:
    """The figures as Markdown."""
    direct = result.direct_tokens / result.direct_s if result.direct_s else 0.0
    framework = result.framework_tokens / result.framework_s if result.framework_s else 0.0
    lines = [
        f"{result.prompts} chat calls per side, max_tokens={result.max_tokens}, greedy, the "
        f"packaged SmolLM2-135M-Instruct (Q4_1) in process; sides alternate call by call. "
        f"{result.cores} cores, load average {result.load_average} at the start (a machine "
        f"shared with other jobs: absolute figures are noisy, the ratio less so).",
        "",
        "| path | output tokens | seconds | tokens/s |",
        "| --- | ---: | ---: | ---: |",
        f"| direct llama.cpp | {result.direct_tokens} | {result.direct_s:.2f} | {direct:.1f} |",
        f"| framework pipeline | {result.framework_tokens} | {result.framework_s:.2f} | "
        f"{framework:.1f} |",
        "",
        f"Framework / direct tokens/s: **{result.median_pair_ratio:.3f}×** as the median over "
        f"the {len(result.pair_ratios)} prompts of the two adjacent calls' ratio (target ≥ "
        f"0.95×); {result.ratio:.3f}× from the totals, which one burst of other jobs moves.",
    ]
    if result.workflows:
        lines += ["", "Each workflow through the CLI in one process (the model loaded once), "
                  "`--json`, memory off:", "",
                  "| workflow | runs | completed | median s | max s | calls | output tokens |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, row in result.workflows.items():
            lines.append(
                f"| {name} | {row['runs']} | {row['completed']} | {row['median_s']} | "
                f"{row['max_s']} | {row['calls']} | {row['output_tokens']} |"
            )
    if result.structured:
        lines += ["", "Structured calls of those runs, by node kind (ladder: named tool call → "
                  "JSON mode → text, one repair):", "",
                  "| node | calls | valid first try | after fallback | after repair | failed |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for node, row in result.structured.items():
            total = sum(row[k] for k in ("first_try", "fallback", "after_repair", "failed"))
            shares = [
                f"{row[k]} ({row[k] / total:.0%})" if total else "0"
                for k in ("first_try", "fallback", "after_repair", "failed")
            ]
            lines.append(f"| {node} | {total} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


__all__ = ["LocalBench", "render_local", "run_local_bench"]
