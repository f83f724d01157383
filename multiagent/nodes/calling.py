"""One node's calls to one agent's model: plain text (with the agent's tools) or structured output.

Every call uses ``invoke`` on the model the pipeline hands out, under the node's own config, so
LangGraph's ``messages`` stream mode still sees the tokens, the completion cache is consulted, and
the run's ledger reserves the call's worst case before it. Each call runs under this node
execution's scope (:func:`multiagent.models.accounting.node_scope`), so its one ledger record
names the node, and the node's usage is summed from those records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import BaseModel

from multiagent.models.accounting import NodeScope, current_scope, new_scope
from multiagent.models.ledger import AnalysisHit
from multiagent.models.structured import StructuredOutputError, run_structured
from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.tools import resolve_tools, run_tool_calls
from multiagent.nodes.usage import Usage, usage_from_records
from multiagent.nodes.window import fit_to_window, window_of

M = TypeVar("M", bound=BaseModel)

#: Rounds of tool calls an agent may make before it must answer in text.
MAX_TOOL_ROUNDS = 3


def _bind(
    model: Runnable[LanguageModelInput, BaseMessage],
    tools: Sequence[Any],
    *,
    tool_choice: str | dict[str, Any] | None,
) -> Runnable[LanguageModelInput, BaseMessage] | None:
    """Bind tools with the model's own ``bind_tools``; ``None`` when it has none."""
    bind_tools = getattr(model, "bind_tools", None)
    if not callable(bind_tools):
        return None
    try:
        bound: Runnable[LanguageModelInput, BaseMessage] = bind_tools(
            list(tools), tool_choice=tool_choice
        )
    except NotImplementedError:  # LangChain's default for a model without tool calling
        return None
    return bound


class AgentCall:
    """The calls one node makes for one agent, metered."""

    def __init__(self, context: WorkflowContext, agent: AgentSpec, *, node: str) -> None:
        self.context = context
        self.agent = agent
        self.node = node
        self.model = context.model(agent)
        self.model_name = context.model_name(agent)
        self.scope: NodeScope = new_scope(node)
        #: The ladder step each structured call of this node ended at.
        self.steps: list[str] = []
        self._started = time.perf_counter()
        self._node_config: RunnableConfig | None = None

    def _config(self) -> RunnableConfig:
        """The node's config with the agent's tag and metadata (built once per node call)."""
        # every agent's tokens reach LangGraph's ``messages`` stream, tagged with the agent.
        # What ``merge_configs(ensure_config(), extra)`` gives, built without its three more
        # ``ensure_config`` copies and a copy of the callback manager per call: the node's
        # config does not change while the node runs, and ``invoke`` copies what it is given
        found = self._node_config
        if found is None:
            found = self._node_config = ensure_config()
            agent = self.agent
            found["tags"] = sorted({*found["tags"], f"agent:{agent.name}"})
            found["metadata"] = {
                **found["metadata"],
                "agent": agent.name,
                "agent_tier": agent.tier,
            }
        return found

    def _invoke(
        self, runnable: Runnable[LanguageModelInput, BaseMessage], messages: list[BaseMessage]
    ) -> AIMessage:
        # real models: a bounded output, and a prompt that fits the window with it
        limit = self.context.settings.profile.models.output_limit(self.node)
        window = self.context.settings.profile.models.context_window_tokens
        messages = fit_to_window(messages, window=window_of(window, self.model), reserve=limit)
        token = current_scope.set(self.scope)
        try:
            reply = runnable.invoke(messages, self._config(), max_tokens=limit)
        finally:
            current_scope.reset(token)
        if not isinstance(reply, AIMessage):
            reply = AIMessage(content=reply.content)
        return reply

    def text(self, messages: Sequence[BaseMessage]) -> str:
        """Ask for a text answer; an agent with tools may call them first.

        Each round the model may call tools; their results (or errors) go back as
        ``ToolMessage`` replies (:func:`~multiagent.nodes.tools.run_tool_calls`), for at most
        :data:`MAX_TOOL_ROUNDS` rounds, then the model must answer in text. A model that cannot
        bind tools answers without them.
        """
        history = list(messages)
        tools = resolve_tools(self.agent.tools, source=f"agent {self.agent.name!r}")
        with_tools = _bind(self.model, tools, tool_choice="auto") if tools else None
        if with_tools is None:
            return self._invoke(self.model, history).text
        for _ in range(MAX_TOOL_ROUNDS):
            reply = self._invoke(with_tools, history)
            if not reply.tool_calls:
                return reply.text
            history.append(reply)
            history.extend(run_tool_calls(reply, tools, config=self._config()))
        final = _bind(self.model, tools, tool_choice="none") or self.model
        return self._invoke(final, history).text

    def structured(
        self,
        messages: Sequence[BaseMessage],
        schema: type[M],
        *,
        tool: dict[str, Any] | None = None,
    ) -> M:
        """Ask for an answer in ``schema``, down the structured-output ladder.

        A forced tool call first, then the provider's JSON modes, then JSON read from text, then
        one repair round (see :mod:`multiagent.models.structured`); every attempt is one of this
        node's recorded calls, and how the call ended is counted under the node's name.

        Args:
            messages: The prompt.
            schema: The pydantic model the answer must validate against.
            tool: An OpenAI tool definition to send instead of ``schema``'s own (to add enums
                known only at run time); its arguments must still validate against ``schema``.

        Raises:
            StructuredOutputError: No step gave an answer that validates.
        """
        try:
            outcome = run_structured(
                self.model, messages, schema, tool=tool, invoke=self._invoke, node=self.node
            )
        except StructuredOutputError as exc:
            raise StructuredOutputError(f"{self.agent.name}: {exc}") from None
        self.steps.append(outcome.step)
        return outcome.value

    def analysis_hit(self) -> None:
        """Record that the analysis cache answered this node for the agent (no call made)."""
        hit = AnalysisHit(
            agent=self.agent.name, model=self.model_name, node=self.node, scope=self.scope.id
        )
        self.context.ledger.record_analysis_hit(hit)

    def usage(self) -> Usage:
        """What this node's calls used so far, from the run ledger's records of them."""
        ledger = self.context.ledger
        return usage_from_records(
            ledger.records(scope=self.scope.id),
            node=self.node,
            agent=self.agent.name,
            model=self.model_name,
            seconds=time.perf_counter() - self._started,
            run=ledger.run_id,
            analysis_hits=ledger.analysis_hit_records(scope=self.scope.id),
        )
