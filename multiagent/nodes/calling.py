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
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from multiagent.models.accounting import NodeScope, current_scope, new_scope
from multiagent.nodes.agents import AgentSpec
from multiagent.nodes.context import WorkflowContext
from multiagent.nodes.failures import StructuredOutputError
from multiagent.nodes.tools import TOOLS
from multiagent.nodes.usage import Usage, usage_from_records

M = TypeVar("M", bound=BaseModel)

#: Rounds of tool calls an agent may make before it must answer in text.
MAX_TOOL_ROUNDS = 3


def _bind(
    model: Runnable[LanguageModelInput, BaseMessage],
    tools: Sequence[Any],
    *,
    tool_choice: str | dict[str, Any] | None,
) -> Runnable[LanguageModelInput, BaseMessage]:
    """Bind tools the way the model prefers: its own ``bind_tools`` when it has one."""
    bind_tools = getattr(model, "bind_tools", None)
    if callable(bind_tools):
        bound: Runnable[LanguageModelInput, BaseMessage] = bind_tools(
            list(tools), tool_choice=tool_choice
        )
        return bound
    formatted = [convert_to_openai_tool(tool) for tool in tools]
    return model.bind(tools=formatted, tool_choice=tool_choice)


class AgentCall:
    """The calls one node makes for one agent, metered."""

    def __init__(self, context: WorkflowContext, agent: AgentSpec, *, node: str) -> None:
        self.context = context
        self.agent = agent
        self.node = node
        self.model = context.model(agent)
        self.model_name = context.model_name(agent)
        self.scope: NodeScope = new_scope(node)
        self._started = time.perf_counter()

    def _config(self) -> RunnableConfig:
        # every agent's tokens reach LangGraph's ``messages`` stream, tagged with the agent
        extra: RunnableConfig = {
            "tags": [f"agent:{self.agent.name}"],
            "metadata": {"agent": self.agent.name, "agent_tier": self.agent.tier},
        }
        return merge_configs(ensure_config(), extra)

    def _invoke(
        self, runnable: Runnable[LanguageModelInput, BaseMessage], messages: list[BaseMessage]
    ) -> AIMessage:
        token = current_scope.set(self.scope)
        try:
            reply = runnable.invoke(messages, self._config())
        finally:
            current_scope.reset(token)
        if not isinstance(reply, AIMessage):
            reply = AIMessage(content=reply.content)
        return reply

    def text(self, messages: Sequence[BaseMessage]) -> str:
        """Ask for a text answer; an agent with tools may call them first."""
        history = list(messages)
        if not self.agent.tools:
            return self._invoke(self.model, history).text
        tools = [TOOLS[name] for name in self.agent.tools]
        with_tools = _bind(self.model, tools, tool_choice="auto")
        for _ in range(MAX_TOOL_ROUNDS):
            reply = self._invoke(with_tools, history)
            if not reply.tool_calls:
                return reply.text
            history.append(reply)
            for call in reply.tool_calls:
                tool = TOOLS.get(call["name"])
                result = (
                    tool.invoke(call["args"])
                    if tool is not None and call["name"] in self.agent.tools
                    else f"error: no tool named {call['name']!r}"
                )
                history.append(ToolMessage(content=str(result), tool_call_id=call["id"] or ""))
        return self._invoke(_bind(self.model, tools, tool_choice="none"), history).text

    def structured(
        self,
        messages: Sequence[BaseMessage],
        schema: type[M],
        *,
        tool: dict[str, Any] | None = None,
    ) -> M:
        """Ask for an answer in ``schema``, through a forced tool call.

        Args:
            messages: The prompt.
            schema: The pydantic model the answer must validate against.
            tool: An OpenAI tool definition to send instead of ``schema``'s own (to add enums
                known only at run time); its arguments must still validate against ``schema``.

        Raises:
            StructuredOutputError: No tool call came back, or its arguments do not validate.
        """
        definition = tool or convert_to_openai_tool(schema)
        name = definition["function"]["name"]
        bound = _bind(self.model, [definition], tool_choice=name)
        reply = self._invoke(bound, list(messages))
        calls = [call for call in reply.tool_calls if call["name"] == name]
        if not calls:
            raise StructuredOutputError(f"{self.agent.name}: the model did not call {name!r}")
        try:
            return schema.model_validate(calls[0]["args"])
        except ValidationError as exc:
            raise StructuredOutputError(
                f"{self.agent.name}: the model's {name!r} arguments do not validate: "
                f"{exc.errors()[0]['msg']}"
            ) from None

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
        )
