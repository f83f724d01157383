"""``multiagent bench local``: the framework's tokens/s on a real model against llama.cpp's own.

The same prompts, the same output bound, greedy sampling with a fixed seed: first straight
through ``Llama.create_chat_completion`` (direct), then through the full pipeline (the
``local`` provider's model from :class:`~multiagent.models.pipeline.ModelPipeline`: redaction,
cache off, backpressure, retry, ledger). Tokens are llama.cpp's own counts; the two sides
alternate prompt by prompt so a busy machine slows both alike. Then each workflow runs once on
the packaged model, timed, with how many of its calls there were.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

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

    @property
    def ratio(self) -> float:
        """Framework tokens/s over direct tokens/s."""
        direct = self.direct_tokens / self.direct_s if self.direct_s else 0.0
        framework = self.framework_tokens / self.framework_s if self.framework_s else 0.0
        return framework / direct if direct else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {**asdict(self), "ratio": round(self.ratio, 4)}


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
    for prompt in PROMPTS * rounds:
        messages = [HumanMessage(prompt)]
        began = time.perf_counter()
        with engine.lock:
            reply = engine.llama.create_chat_completion(
                messages=as_openai_messages(messages), **options
            )
        result.direct_s += time.perf_counter() - began
        result.direct_tokens += int(reply["usage"]["completion_tokens"])
        began = time.perf_counter()
        answer = model.invoke(messages, **options)
        result.framework_s += time.perf_counter() - began
        result.framework_tokens += int((answer.usage_metadata or {}).get("output_tokens", 0))
    if workflows:
        result.workflows = _workflows()
    return result


def _workflows() -> dict[str, dict[str, Any]]:
    """Each workflow once on the packaged model, as a user runs it (a new process, the CLI)."""
    import json
    import os
    import subprocess
    import sys

    commands = {
        "run": ["run", "Plan a product launch for a small bakery", "--no-stream"],
        "meeting": ["meeting", "Opening hours for a bakery", "--rounds", "1"],
        "validate": ["validate", "Bread rises because yeast makes gas."],
    }
    env = {**os.environ, "MULTIAGENT_PROVIDER": "local"}
    out: dict[str, dict[str, Any]] = {}
    for name, args in commands.items():
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "multiagent", *args, "--json", "--memory", "off"]
            if name != "validate"
            else [sys.executable, "-m", "multiagent", *args, "--json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        seconds = round(time.perf_counter() - began, 2)
        try:
            doc = json.loads(done.stdout)
        except json.JSONDecodeError:
            doc = {"status": f"exit {done.returncode}", "usage": {}}
        usage = doc.get("usage") or {}
        out[name] = {
            "status": doc.get("status"),
            "seconds": seconds,
            "calls": usage.get("calls", 0),
            "output_tokens": usage.get("output_tokens", 0),
        }
    return out


def render_local(result: LocalBench) -> str:
    """The figures as Markdown."""
    direct = result.direct_tokens / result.direct_s if result.direct_s else 0.0
    framework = result.framework_tokens / result.framework_s if result.framework_s else 0.0
    lines = [
        f"{result.prompts} chat calls per side, max_tokens={result.max_tokens}, greedy, the "
        f"packaged SmolLM2-135M-Instruct (Q4_1) in process; sides alternate call by call.",
        "",
        "| path | output tokens | seconds | tokens/s |",
        "| --- | ---: | ---: | ---: |",
        f"| direct llama.cpp | {result.direct_tokens} | {result.direct_s:.2f} | {direct:.1f} |",
        f"| framework pipeline | {result.framework_tokens} | {result.framework_s:.2f} | "
        f"{framework:.1f} |",
        "",
        f"Framework / direct tokens/s: **{result.ratio:.3f}×** (target ≥ 0.95×).",
    ]
    if result.workflows:
        lines += ["", "| workflow | status | seconds | calls | output tokens |",
                  "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        for name, row in result.workflows.items():
            lines.append(
                f"| {name} | {row['status']} | {row['seconds']} | {row['calls']} | "
                f"{row['output_tokens']} |"
            )
    return "\n".join(lines)


__all__ = ["LocalBench", "render_local", "run_local_bench"]
