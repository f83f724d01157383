"""The agent catalogue: built-in agents plus the user's ``agents.toml``.

``agents.toml`` lives in ``MULTIAGENT_HOME`` (or is named with ``--agents-file``). Each table under
``[agents]`` adds an agent or overrides fields of a built-in one::

    [agents.economist]
    role = "You are the analyst for economics: costs, prices, incentives and trade-offs."
    tier = "premium"
    description = "economic analysis"

    [agents.critic]
    tier = "premium"          # a built-in agent, one field changed
    tools = ["calculator", "my_package.tools:search"]   # built-in names or import paths
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from multiagent._inputs import shown
from multiagent.errors import ConfigError, UsageError, did_you_mean
from multiagent.nodes.agents import BUILTIN_AGENTS, AgentKind, AgentSpec
from multiagent.nodes.tools import resolve_tools
from multiagent.policies import Settings

AGENTS_FILE_NAME = "agents.toml"
_FIELDS = tuple(AgentSpec.model_fields)


class AgentCatalog(Mapping[str, AgentSpec]):
    """Agents by name, with lookups that fail with one clear line."""

    def __init__(self, agents: Iterable[AgentSpec], *, source: str = "built-in") -> None:
        self._agents = {agent.name: agent for agent in agents}
        self.source = source

    def __getitem__(self, name: str) -> AgentSpec:
        return self._agents[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def of_kind(self, kind: AgentKind) -> list[str]:
        """Names of the agents of ``kind``, in catalogue order."""
        return [name for name, agent in self._agents.items() if agent.kind == kind]

    def require(self, name: str, *, kind: AgentKind, option: str = "agent") -> AgentSpec:
        """Return agent ``name`` of ``kind``, or raise :class:`UsageError` naming the valid ones."""
        agent = self._agents.get(name)
        if agent is None or agent.kind != kind:
            valid = ", ".join(self.of_kind(kind)) or "none"
            raise UsageError(f"unknown {option} {name!r}; valid: {valid}")
        return agent

    def team(self, names: Sequence[str], *, kind: AgentKind, option: str) -> tuple[str, ...]:
        """Check a list of agent names given on the command line; duplicates are an error."""
        cleaned = [name.strip() for name in names]
        valid = ", ".join(self.of_kind(kind))
        if not any(cleaned):
            raise UsageError(f"{option} needs at least one name; valid: {valid}")
        if "" in cleaned:  # a name left out between commas is a typo, not a smaller team
            raise UsageError(
                f"{option} {shown(','.join(names))} has an empty name (name "
                f"{cleaned.index('') + 1} of {len(cleaned)}); separate names with single "
                f"commas; valid: {valid}"
            )
        for name in cleaned:
            self.require(name, kind=kind, option=option.lstrip("-").rstrip("s"))
        seen = {name for name in cleaned if cleaned.count(name) > 1}
        if seen:
            raise UsageError(f"{option} names {sorted(seen)[0]!r} twice; name each agent once")
        return tuple(cleaned)


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """Turn ``"a,b,c"`` (or a list) into names; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.split(",")
    return list(value)


def _read(path: Path) -> dict[str, Any]:
    from multiagent._inputs import read_text_file

    try:
        data = tomllib.loads(read_text_file(path, what="agents file"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed agents file {path}: {exc}") from None
    unknown = sorted(set(data) - {"agents"})
    if unknown:
        hint = did_you_mean(unknown[0], ["agents"])
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}{hint}; valid: agents")
    agents = data.get("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError(f"'agents' in {path} must be a table of agent tables")
    return agents


def _merge(name: str, fields: Any, base: AgentSpec | None, path: Path) -> AgentSpec:
    if not isinstance(fields, dict):
        raise ConfigError(f"agent {name!r} in {path} must be a table")
    unknown = sorted(set(fields) - set(_FIELDS) - {"name"})
    if unknown:
        hint = did_you_mean(unknown[0], _FIELDS)
        raise ConfigError(
            f"unknown field {unknown[0]!r} for agent {name!r} in {path}{hint}; valid: "
            f"{', '.join(f for f in _FIELDS if f != 'name')}"
        )
    data = base.model_dump() if base is not None else {}
    data.update(fields, name=name)
    if "tools" in data and isinstance(data["tools"], list):
        data["tools"] = tuple(data["tools"])
    try:
        agent = AgentSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "agent"
        raise ConfigError(f"agent {name!r} in {path}: {where}: {err['msg']}") from None
    resolve_tools(agent.tools, source=f"agent {name!r} in {path}")  # each one must load
    return agent


def load_agents(settings: Settings, *, agents_file: str | Path | None = None) -> AgentCatalog:
    """Return the built-in agents with the user's additions and overrides applied.

    Args:
        settings: Resolved settings; ``agents.toml`` in ``settings.home`` is read when present.
        agents_file: A TOML file to read instead; it must exist.

    Raises:
        ConfigError: The file is missing (when named), malformed, or defines an invalid agent.
    """
    path = Path(agents_file) if agents_file is not None else settings.home / AGENTS_FILE_NAME
    if agents_file is not None and not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"agents file {path} {what}")
    agents = {agent.name: agent for agent in BUILTIN_AGENTS}
    if not path.is_file():
        return AgentCatalog(agents.values())
    for name, fields in _read(path).items():
        agents[name] = _merge(name, fields, agents.get(name), path)
    return AgentCatalog(agents.values(), source=str(path))
