"""``bench overhead``: what the framework adds to a bare LangGraph graph doing the same calls.

The same three-agent orchestration (planner with a forced tool call → three agents in parallel
via ``Send`` → synthesizer) runs two ways on the zero-latency simulated model, with the same
prompts and parameters and therefore the same model calls:

- **bare**: a plain ``StateGraph`` whose nodes call ``SimulatedChatModel.invoke`` directly,
  asking for the ``max_tokens`` the pipeline asks for; no checkpointer, no context, no
  accounting.
- **full**: :func:`~multiagent.graphs.orchestration.build_orchestration_graph` run the way the
  CLI runs it (:func:`~multiagent.graphs.runner.run_workflow`): the SQLite checkpointer with
  synchronous durability, ``stream_mode`` tasks/messages/values, every call through
  :class:`~multiagent.models.pipeline.ModelPipeline` (redaction per profile, completion cache,
  adaptive backpressure, retries, ledger, metrics) and a usage meter per node.

Each iteration uses a new task, so the completion cache misses (a hit would make "full" faster
than "bare" and say nothing about overhead). The provider's rate limits are raised far above
what the benchmark sends: pacing requests to a provider's limit is policy, not overhead.
Every iteration runs every variant once, in an order rotated from one iteration to the next, so
that drift in the machine's speed and the garbage one variant leaves behind hit all alike;
warm-up iterations are not timed, and the figures are medians over the timed iterations. Both
wall time and the process's CPU time are recorded: on a machine shared with other work the CPU
time is the steadier of the two, and on a zero-latency model nearly all wall time is CPU.
"""

from __future__ import annotations

import operator
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from multiagent.graphs.inputs import orchestration_input
from multiagent.graphs.runner import run_workflow
from multiagent.graphs.workflows import compile_workflow
from multiagent.models.accounting import DEFAULT_MAX_OUTPUT_TOKENS
from multiagent.models.pipeline import ModelPipeline
from multiagent.nodes.agents_file import AgentCatalog, load_agents
from multiagent.nodes.context import build_context
from multiagent.nodes.planner import PlanAnswer, merge_steps, plan_tool
from multiagent.nodes.synthesizer import synthesis_prompt
from multiagent.persistence.checkpointer import open_checkpointer
from multiagent.policies import TIERS, Settings, Tier, load_settings
from multiagent.sim.model import SimulatedChatModel

TEAM = ("researcher", "analyst", "critic")
RATIO_TARGET = 1.10
#: Raised limits: the simulated provider answers at once, so only overhead is left to measure.
_UNPACED = {
    "rate_limit.requests_per_minute": 10_000_000,
    "rate_limit.tokens_per_minute": 10_000_000_000,
    "sim.ttft_s": 0.0,
    "sim.token_latency_s": 0.0,
}


class _BareTask(TypedDict):
    task: str
    agent: str
    subtask: str


class _BareState(TypedDict):
    task: str
    plan: list[dict[str, str]]
    contributions: Annotated[list[dict[str, str]], operator.add]
    output: str


def bare_orchestration(
    settings: Settings,
    agents: AgentCatalog,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The orchestration as a plain LangGraph graph calling the simulated model directly."""
    models = {tier: _direct_model(settings, tier) for tier in TIERS}
    planner, synthesizer, team = agents["planner"], agents["synthesizer"], list(TEAM)

    def plan(state: _BareState) -> dict[str, Any]:
        roster = "\n".join(
            f"- {name}: {agents[name].description or agents[name].role[:120]}" for name in team
        )
        prompt = (
            f"{state['task']}\n\nTeam members you may assign:\n{roster}\n\n"
            "Give each member you involve one focused subtask."
        )
        model = models[planner.tier].bind_tools([plan_tool(team)], tool_choice="submit_plan")
        reply = model.invoke([SystemMessage(planner.role), HumanMessage(prompt)])
        answer = PlanAnswer.model_validate(reply.tool_calls[0]["args"])  # type: ignore[attr-defined]
        steps = merge_steps(answer, task=state["task"], team=team, pick=False)
        return {"plan": [dict(step) for step in steps]}

    def fan_out(state: _BareState) -> list[Send]:
        return [Send("work", {"task": state["task"], **step}) for step in state["plan"]]

    def work(state: _BareTask) -> dict[str, Any]:
        agent = agents[state["agent"]]
        prompt = f"{state['task']}\n\nYour part of this task: {state['subtask']}"
        reply = models[agent.tier].invoke([SystemMessage(agent.role), HumanMessage(prompt)])
        return {"contributions": [{**state, "text": reply.text}]}

    def synthesize(state: _BareState) -> dict[str, Any]:
        prompt = synthesis_prompt(state["task"], state["contributions"])  # type: ignore[arg-type]
        model = models[synthesizer.tier]
        reply = model.invoke([SystemMessage(synthesizer.role), HumanMessage(prompt)])
        return {"output": reply.text}

    graph = StateGraph(_BareState)
    graph.add_node("plan", plan)
    graph.add_node("work", work, input_schema=_BareTask)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out, ["work"])
    graph.add_edge("work", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(checkpointer=checkpointer)


def _direct_model(settings: Settings, tier: Tier) -> SimulatedChatModel:
    """The simulated model of ``tier``, asked for what the pipeline asks it for.

    The pipeline caps a call's output at the allowance it reserved (``max_tokens``
    :data:`~multiagent.models.accounting.DEFAULT_MAX_OUTPUT_TOKENS` when the caller sets none),
    so the bare graph sends the same ``max_tokens``: the same requests on both sides. (The
    simulator's work grows with ``max_tokens``; without it the bare side skipped that work.)
    """
    return SimulatedChatModel(
        model=settings.profile.models.for_tier(tier),
        seed=settings.sim.seed,
        max_tokens=DEFAULT_MAX_OUTPUT_TOKENS,
    )


class _DirectModels(ModelPipeline):
    """Hands every agent the bare simulated model of its tier: the graph without the pipeline."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._direct = {tier: _direct_model(settings, tier) for tier in TIERS}

    def model_for(  # type: ignore[override]
        self, tier: Tier, *, agent: str, **kwargs: Any
    ) -> SimulatedChatModel:
        return self._direct[tier]


#: The variants timed, in the order each iteration runs them.
VARIANTS: dict[str, str] = {
    "bare": "bare graph, no persistence",
    "bare_sqlite": "bare graph, SQLite checkpointer (sync durability)",
    "nodes_only": "this project's graph and nodes, models called directly (no model pipeline)",
    "full": "full pipeline (graph.invoke with context), no persistence",
    "full_nocache": "full pipeline, no persistence, completion cache off",
    "full_cli": "full pipeline as the CLI runs it: run_workflow, SQLite (sync durability)",
}


def _ms(values: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3),
        "cpu_median_ms": round(statistics.median(cpu) * 1000, 3),
    }


def _rotated(names: list[str], index: int) -> list[str]:
    """``names`` starting at position ``index`` (mod their number)."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


def run_overhead_bench(*, iterations: int = 40, warmup: int = 5) -> dict[str, Any]:
    """Time the bare and the full orchestration; return the figures as JSON-ready data.

    The headline ratio is ``full`` against ``bare`` (the same calls, neither persisted);
    ``full_cli`` against ``bare_sqlite`` compares them with the same persistence.

    Args:
        iterations: Timed runs of each variant.
        warmup: Untimed runs of each first (imports, connections, the interpreter's caches).

    Raises:
        ValueError: ``iterations`` is below 1 or ``warmup`` below 0.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be ≥ 1 and warmup ≥ 0, got {iterations} and {warmup}")
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    same_output = True
    calls = 0
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-overhead-") as home:
        # the embedded defaults, whatever the environment names: a shared Redis cache would
        # answer the pipeline from an earlier run, a shared PostgreSQL would time the network
        embedded = {"redis_url": None, "checkpoint_url": None}
        settings = load_settings(home=Path(home), overrides=_UNPACED).model_copy(update=embedded)
        nocache = load_settings(
            home=Path(home) / "nocache", overrides={**_UNPACED, "cache.completion_enabled": False}
        ).model_copy(update=embedded)
        agents = load_agents(settings)
        pipelines = {
            "on": ModelPipeline(settings),
            "off": ModelPipeline(nocache),
            "direct": _DirectModels(settings),
        }
        with open_checkpointer(settings) as saver:
            bare = bare_orchestration(settings, agents)
            bare_saved = bare_orchestration(settings, agents, checkpointer=saver)
            full = compile_workflow("orchestration")

            def runs(index: int) -> dict[str, Callable[[], Any]]:
                # "bare" and "full" get the same task (the same calls); the others their own,
                # so that no variant finds another's answers in the completion cache
                def task(variant: str) -> str:
                    return f"Plan a product launch for bakery {index}{variant}"

                def context(which: str) -> Any:
                    chosen = nocache if which == "off" else settings
                    return build_context(
                        chosen, agents=agents, pipeline=pipelines[which], analysis_cache=None
                    )

                def inputs(variant: str) -> Any:
                    return orchestration_input(task(variant), agents=agents, team=list(TEAM))

                return {
                    "bare": lambda: bare.invoke({"task": task("")}),
                    "bare_sqlite": lambda: bare_saved.invoke(
                        {"task": task(" (saved)")},
                        {"configurable": {"thread_id": f"bare-{index}"}},
                        durability="sync",
                    ),
                    "nodes_only": lambda: full.invoke(inputs(""), context=context("direct")),
                    "full": lambda: full.invoke(inputs(""), context=context("on")),
                    "full_nocache": lambda: full.invoke(
                        inputs(" (no cache)"), context=context("off")
                    ),
                    "full_cli": lambda: run_workflow(
                        "orchestration",
                        inputs(" (cli)"),
                        context=context("on"),
                        checkpointer=saver,
                        thread_id=f"full-{index}",
                    ),
                }

            for index in range(warmup + iterations):
                outputs: dict[str, Any] = {}
                variants = runs(index)
                for name in _rotated(list(variants), index):
                    started, cpu_started = time.perf_counter(), time.process_time()
                    outputs[name] = variants[name]()
                    if index >= warmup:
                        times[name].append(time.perf_counter() - started)
                        cpu[name].append(time.process_time() - cpu_started)
                cli_run = outputs["full_cli"]
                if cli_run.status != "completed":
                    raise RuntimeError(f"the full pipeline stopped: {cli_run.message}")
                calls = len(cli_run.ledger.calls)
                same_output = same_output and outputs["bare"]["output"] == outputs["full"]["output"]
    figures = {name: _ms(values, cpu[name]) for name, values in times.items()}
    ratio = figures["full"]["median_ms"] / figures["bare"]["median_ms"]
    cpu_ratio = figures["full"]["cpu_median_ms"] / figures["bare"]["cpu_median_ms"]
    ratio_saved = figures["full_cli"]["median_ms"] / figures["bare_sqlite"]["median_ms"]
    per_call = (figures["full"]["median_ms"] - figures["bare"]["median_ms"]) / max(calls, 1)
    nodes_ratio = figures["nodes_only"]["median_ms"] / figures["bare"]["median_ms"]
    return {
        "iterations": iterations,
        "calls_per_run": calls,
        "variants": {name: {"what": VARIANTS[name], **figures[name]} for name in VARIANTS},
        "ratio": round(ratio, 3),
        "ratio_cpu": round(cpu_ratio, 3),
        "ratio_with_persistence": round(ratio_saved, 3),
        "ratio_nodes_only": round(nodes_ratio, 3),
        "overhead_per_call_ms": round(per_call, 3),
        "target": RATIO_TARGET,
        "met": ratio <= RATIO_TARGET,
        "same_output": same_output,
    }
