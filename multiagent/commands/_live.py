"""The live view of a workflow in the terminal: progress, every agent's tokens under its name, the
moderator's judgements and the verdicts as they happen.

Agents working in parallel stream at once; a terminal shows one stream at a time. The first agent
to produce a token holds the screen and streams live; the others' tokens are kept and shown, under
their names, as soon as the screen is free (an agent already done is shown whole, one still
working continues live). Progress lines that arrive while an agent streams wait for the end of
its answer, so text and progress never interleave mid-line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # imported where used, so `--help` stays fast
    from multiagent.graphs.run_events import WorkflowEvent

#: Nodes whose tokens are the run's answer: shown even with ``--quiet-agents``.
FINAL_NODES = frozenset({"synthesize", "summarize"})
_HEADINGS = {"synthesize": "collaborative output", "summarize": "meeting summary"}


@dataclass
class _Stream:
    """One task's tokens: who produces them, what was shown, whether the task ended."""

    heading: str
    node: str
    parts: list[str] = field(default_factory=list)
    shown: int = 0
    done: bool = False


def _money(value: float) -> str:
    return f"${value:.6f}"


def _agreement(value: Any) -> str:
    """The moderator's agreement, ``unknown`` when it gave no judgement."""
    return "unknown" if value is None else f"{float(value):.2f}"


def describe_custom(data: dict[str, Any]) -> str | None:
    """A node's ``custom`` stream event as one line of rich markup, or ``None`` to show nothing."""
    kind = data.get("type")
    if kind == "agent_finished":
        mark = "[red]✗[/]" if data.get("error") else "[green]✓[/]"
        cached = f" · {data['cache_hits']} cached" if data.get("cache_hits") else ""
        return (
            f"  {mark} [bold]{data['agent']}[/] [dim]{data['calls']} calls · "
            f"{data['input_tokens']}+{data['output_tokens']} tokens · "
            f"{_money(float(data['cost_usd']))}{cached}[/]"
        )
    if kind == "moderator":
        verdict = "[green]consensus[/]" if data["consensus"] else "[yellow]no consensus yet[/]"
        line = (
            f"[magenta]⚖ moderator[/] · round {data['round']}: {verdict} "
            f"(agreement {_agreement(data.get('agreement'))})"
        )
        if data.get("open_questions"):
            line += f" [dim]open: {'; '.join(data['open_questions'])}[/]"
        return line
    if kind == "verdict":
        outcome = "[green]pass[/]" if data["passed"] else "[red]fail[/]"
        cached = " [dim](cached)[/]" if data.get("cached") else ""
        return (
            f"  {outcome} [bold]{data['validator']}[/] confidence "
            f"{float(data['confidence']):.2f}{cached}"
        )
    if kind == "item_result":
        return (
            f"[bold]item {data['id']}[/]: {data['status']} (approval "
            f"{float(data['approval']):.2f}, {data['responded']} answered, quorum {data['quorum']})"
        )
    return None


class LiveView:
    """Receives a run's :class:`~multiagent.graphs.run_events.WorkflowEvent` s and prints them.

    Args:
        console: Where to print.
        quiet_agents: Hide the agents' token streams; the final answer (synthesis, summary)
            still streams, and progress, costs and judgements are still shown.
    """

    def __init__(self, console: Console, *, quiet_agents: bool = False) -> None:
        self.console = console
        self.quiet_agents = quiet_agents
        self.streamed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._labels: dict[str, str] = {}
        self._focus: str | None = None
        self._waiting: list[str] = []

    # -- printing ------------------------------------------------------------------------

    def _line(self, markup: str) -> None:
        if self._focus is not None:
            self._waiting.append(markup)
        else:
            self.console.print(markup, highlight=False, soft_wrap=True)

    def _text(self, text: str) -> None:
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def _show(self, task: str) -> None:
        """Give the screen to ``task``: its heading, then what it streamed so far."""
        stream = self._streams[task]
        self.console.rule(f"[bold]{stream.heading}", align="left")
        self._focus = task
        self._catch_up(stream)

    def _catch_up(self, stream: _Stream) -> None:
        self._text("".join(stream.parts[stream.shown :]))
        stream.shown = len(stream.parts)

    def _release(self) -> None:
        """End the focused stream; show waiting lines, then the next stream that has text."""
        while self._focus is not None:
            self.console.print()
            del self._streams[self._focus]
            self._focus = None
            waiting, self._waiting = self._waiting, []
            for markup in waiting:
                self.console.print(markup, highlight=False, soft_wrap=True)
            following = next((t for t, s in self._streams.items() if s.parts), None)
            if following is None:
                return
            self._show(following)
            if not self._streams[following].done:
                return

    # -- events ----------------------------------------------------------------------------

    def __call__(self, event: WorkflowEvent) -> None:
        if event.kind == "token":
            self._token(event)
        elif event.kind == "custom":
            markup = describe_custom(event.data or {})
            if markup is not None:
                self._line(markup)
        elif event.kind == "start":
            self._labels[event.task] = event.label
            self._line(f"[cyan]▸[/] {event.label}")
        else:
            self._end(event)

    def _token(self, event: WorkflowEvent) -> None:
        if self.quiet_agents and event.node not in FINAL_NODES:
            return
        self.streamed.add(event.node)
        stream = self._streams.get(event.task)
        if stream is None:
            label = self._labels.get(event.task, event.node)
            heading = _HEADINGS.get(event.node, label)
            if event.node in _HEADINGS:
                heading = f"{heading} · {event.agent}"
            stream = self._streams[event.task] = _Stream(heading=heading, node=event.node)
        stream.parts.append(event.text)
        if self._focus is None:
            self._show(event.task)
        elif self._focus == event.task:
            self._catch_up(stream)

    def _end(self, event: WorkflowEvent) -> None:
        if event.error:
            self._line(f"[red]✗[/] {event.label} [dim]{event.error}[/]")
        else:
            self._line(f"[green]✓[/] {event.label} [dim]{event.seconds:.2f}s[/]")
        stream = self._streams.get(event.task)
        if stream is not None:
            stream.done = True
        if event.task == self._focus:
            self._release()

    def close(self) -> None:
        """Show whatever is still held (a run stopped mid-stream) and end the last line."""
        if self._focus is None and any(s.parts for s in self._streams.values()):
            self._show(next(t for t, s in self._streams.items() if s.parts))
        while self._focus is not None:
            for stream in self._streams.values():
                stream.done = True
            self._release()
