"""Checks of configuration values: variable names, URLs, the data directory, unknown keys.

Each check raises :class:`~multiagent.errors.ConfigError` with one line naming the value, where
it came from, what is valid and, for a misspelt name, the nearest valid one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from multiagent.errors import ConfigError, did_you_mean

_SECTIONS = (
    "models",
    "validation",
    "rate_limit",
    "memory",
    "cache",
    "features",
    "budget",
    "prices",
    "sim",
)
_TOP_LEVEL = ("env", "policy", "provider", "checkpoint_url", "redis_url", "budget_usd")
#: URL schemes the ``redis`` client accepts.
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: URL schemes of ``MULTIAGENT_CHECKPOINT_URL`` (unset: SQLite under ``MULTIAGENT_HOME``).
CHECKPOINT_SCHEMES = ("postgresql", "postgres")
#: ``MULTIAGENT_*`` variables read elsewhere (not settings): never reported as unknown.
_OTHER_VARIABLES = (
    "crash_point",
    "crash_point_file",
    "encryption_key",
    "encryption_key_file",
    "metrics_token",
    "new_encryption_key",
    "test_postgres_url",
    "test_redis_url",
)


def _check_variable_names(environ: Mapping[str, str]) -> None:
    """Refuse ``MULTIAGENT_*`` names that look like a setting but are none (a typo is silent)."""
    known = tuple(_TOP_LEVEL) + tuple(_SECTIONS) + ("home",)
    for variable in sorted(environ):
        if not variable.startswith("MULTIAGENT_"):
            continue
        name = variable.removeprefix("MULTIAGENT_").lower()
        section, nested, rest = name.partition("__")
        if nested and section not in _SECTIONS:
            # ``RATE__LIMIT__X``: one separator too many splits a section's own name
            joined = f"{section}_{rest.partition('__')[0]}"
            hint = did_you_mean(section, _SECTIONS) or did_you_mean(joined, _SECTIONS)
            raise ConfigError(
                f"unknown settings section {section!r} in variable {variable}"
                f"{hint}; valid sections: {', '.join(_SECTIONS)}"
            )
        if nested or name in known or name in _OTHER_VARIABLES:
            continue
        hint = did_you_mean(name, known, cutoff=0.8)  # another variable is not a typo
        if hint and not any(name.startswith(other) for other in _OTHER_VARIABLES):
            raise ConfigError(f"unknown setting variable {variable}{hint}")


def check_checkpoint_url(url: str, *, source: str) -> str:
    """Return ``url`` when it names a checkpointer backend; else raise one line naming it."""
    shown = _mask_url(url)
    malformed = f"malformed MULTIAGENT_CHECKPOINT_URL {shown!r} (from {source})"
    parts, _port = _split_url(url, what=malformed)
    schemes = ", ".join(f"{scheme}://" for scheme in CHECKPOINT_SCHEMES)
    if parts.scheme not in CHECKPOINT_SCHEMES:
        raise ConfigError(
            f"unsupported MULTIAGENT_CHECKPOINT_URL {shown!r} (from {source}): the scheme must "
            f"be one of {schemes} (leave it unset for SQLite under MULTIAGENT_HOME)"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError(f"{malformed}: no host")
    return url


def _check_home(home: Path, source: str) -> Path:
    """The data directory must be a directory, or not exist yet (commands create it)."""
    if home.exists() and not home.is_dir():
        raise ConfigError(
            f"data directory {home} (from {source}) is not a directory; set MULTIAGENT_HOME or "
            "--home to a directory"
        )
    return home


def _mask_url(url: str | None) -> str | None:
    if url is None or "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _split_url(url: str, *, what: str) -> tuple[SplitResult, int | None]:
    """``url``'s parts and port; a port that is not a number (or out of range) raises one line
    starting with ``what``."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def check_redis_url(url: str, *, source: str) -> str:
    """Return ``url`` when the ``redis`` client can use it; else raise one line naming it.

    Only the form is checked here (settings import no client); whether the server answers is
    checked when a command opens the connection (:mod:`multiagent.distributed.redis`).
    """
    what = f"malformed MULTIAGENT_REDIS_URL {_mask_url(url)!r} (from {source})"
    parts, port = _split_url(url, what=what)
    problem = None
    if parts.scheme not in REDIS_SCHEMES:
        problem = f"the scheme must be one of {', '.join(s + '://' for s in REDIS_SCHEMES)}"
    elif parts.scheme == "unix" and not parts.path:
        problem = "a unix:// URL needs a socket path"
    elif parts.scheme != "unix" and not parts.hostname:
        problem = "no host"
    elif parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        problem = f"the database {parts.path.strip('/')!r} is not a number"
    elif port == 0:
        problem = "port 0"
    if problem is not None:
        raise ConfigError(f"{what}: {problem}")
    return url


def check_openai_base_url(url: str) -> str:
    """Return ``url`` when it can be an OpenAI-compatible base URL; else raise one line naming
    it (a malformed one was retried as a connection error, or raised a traceback)."""
    what = f"malformed OPENAI_BASE_URL {_mask_url(url)!r} (from the environment)"
    parts, port = _split_url(url, what=what)
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the scheme must be http:// or https://"
    elif not parts.hostname:
        problem = "no host"
    elif port == 0:
        problem = "port 0"
    if problem is not None:
        raise ConfigError(f"{what}: {problem}; e.g. http://127.0.0.1:8080/v1")
    return url


def _unknown_setting(path: str, known: Mapping[str, Any], origin: str) -> str:
    section = path.split(".", 1)[0]
    if section not in _SECTIONS and section != "budget_usd":
        hint = did_you_mean(section, (*_SECTIONS, "budget_usd"))
        return f"unknown settings section {section!r} in {origin}{hint}; valid: " + ", ".join(
            _SECTIONS
        )
    keys = [p for p in known if p.startswith(f"{section}.")]
    return f"unknown setting {path!r} in {origin}{did_you_mean(path, keys)}; valid: " + ", ".join(
        k.split(".", 1)[1] for k in keys
    )
