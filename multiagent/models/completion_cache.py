"""The completion cache: a diskcache-backed LangChain ``BaseCache`` under ``MULTIAGENT_HOME``.

Keys are the SHA-256 of the model's identity and generation parameters (LangChain's
``llm_string``: provider, model, base URL, temperature, max tokens, bound tools, stop words...)
and the *normalised* prompt: each message reduced to its type, stripped text, tool calls, tool
call id and name, so ids, usage counts and response metadata of earlier turns do not split
otherwise identical prompts.

Values are stored as JSON (``message_to_dict``), never pickled code. Hit and miss counters live
in a second diskcache and are incremented atomically (``Cache.incr`` is one SQLite transaction),
so they are exact, survive restarts, and are shared by every process using the same home.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diskcache
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

from multiagent.observability.metrics import get_metrics

_HITS, _MISSES = "hits", "misses"
_KEEP = ("content", "tool_calls", "tool_call_id", "name")


def completion_cache_dir(home: Path) -> Path:
    """Where the completion cache of a data directory lives."""
    return home / "cache" / "completions"


def _normal_message(item: Any) -> Any:
    if not (isinstance(item, dict) and item.get("type") == "constructor"):
        return item
    kwargs = item.get("kwargs", {})
    kept: dict[str, Any] = {}
    for key in _KEEP:
        value = kwargs.get(key)
        if value in (None, [], ""):
            continue
        if key == "content" and isinstance(value, str):
            value = value.strip()
        if key == "tool_calls":
            value = [{"name": c.get("name"), "args": c.get("args")} for c in value]
        kept[key] = value
    return {"type": item.get("id", ["?"])[-1], **kept}


def normalise_prompt(prompt: str) -> str:
    """The cache's view of a serialised prompt: what the model reads, nothing else."""
    try:
        data = json.loads(prompt)
    except ValueError:
        return prompt.strip()
    if not isinstance(data, list):
        return json.dumps(_normal_message(data), sort_keys=True, ensure_ascii=False)
    return json.dumps([_normal_message(m) for m in data], sort_keys=True, ensure_ascii=False)


def cache_key(prompt: str, llm_string: str) -> str:
    """The SHA-256 key of a (prompt, model + parameters) pair."""
    blob = f"{llm_string}\x00{normalise_prompt(prompt)}".encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class CompletionCacheStats:
    """Exact counters of a completion cache (all processes, all time since the last reset)."""

    hits: int
    misses: int
    entries: int

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0 when nothing was looked up)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters with the lookups and hit rate."""
        return {**asdict(self), "lookups": self.lookups, "hit_rate": self.hit_rate}


def _encode(generations: RETURN_VAL_TYPE) -> str:
    items: list[dict[str, Any]] = []
    for gen in generations:
        if isinstance(gen, ChatGeneration):
            items.append({"message": message_to_dict(gen.message), "info": gen.generation_info})
        else:
            items.append({"text": gen.text, "info": gen.generation_info})
    return json.dumps(items, ensure_ascii=False, default=str)


def _decode(blob: str) -> list[Generation]:
    out: list[Generation] = []
    for item in json.loads(blob):
        if "message" in item:
            message = messages_from_dict([item["message"]])[0]
            out.append(ChatGeneration(message=message, generation_info=item.get("info")))
        else:
            out.append(Generation(text=item["text"], generation_info=item.get("info")))
    return out


class CompletionCache(BaseCache):
    """Completions on disk, keyed by model identity, parameters and the normalised prompt."""

    def __init__(self, directory: Path, *, ttl_s: float | None = None) -> None:
        """Open (or create) the cache in ``directory``; entries expire after ``ttl_s``."""
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self._entries = diskcache.Cache(str(self.directory / "entries"))
        self._counters = diskcache.Cache(str(self.directory / "stats"))
        # parallel nodes write at once; SQLite makes a blocked writer sleep (1 ms and up), a
        # lock in the process hands over in microseconds (other processes still use SQLite's)
        self._write_lock = threading.Lock()

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Return the cached generations for the pair, counting a hit or a miss."""
        blob = self._entries.get(cache_key(prompt, llm_string))
        hit = isinstance(blob, str)
        with self._write_lock:
            self._counters.incr(_HITS if hit else _MISSES, 1, default=0, retry=True)
        get_metrics().inc("completion_cache_hits_total" if hit else "completion_cache_misses_total")
        return _decode(blob) if hit else None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations for the pair."""
        key, blob = cache_key(prompt, llm_string), _encode(return_val)
        with self._write_lock:
            self._entries.set(key, blob, expire=self.ttl_s, retry=True)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """As :meth:`lookup` (a local SQLite read is faster than a thread hop)."""
        return self.lookup(prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """As :meth:`update`."""
        self.update(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry; pass ``counters=True`` to reset the hit/miss counters too."""
        self._entries.clear(retry=True)
        if kwargs.get("counters"):
            self._counters.clear(retry=True)

    async def aclear(self, **kwargs: Any) -> None:
        """As :meth:`clear`."""
        self.clear(**kwargs)

    def stats(self) -> CompletionCacheStats:
        """The exact counters and the number of entries."""
        return CompletionCacheStats(
            hits=int(self._counters.get(_HITS, 0, retry=True)),
            misses=int(self._counters.get(_MISSES, 0, retry=True)),
            entries=len(self._entries),
        )

    def close(self) -> None:
        """Close the underlying SQLite connections."""
        self._entries.close()
        self._counters.close()


_OPEN: dict[tuple[Path, float | None], CompletionCache] = {}
_OPEN_LOCK = threading.Lock()


def open_completion_cache(home: Path, *, ttl_s: float | None = None) -> CompletionCache:
    """The process's completion cache for data directory ``home`` (opened once)."""
    directory = completion_cache_dir(Path(home)).resolve()
    with _OPEN_LOCK:
        cache = _OPEN.get((directory, ttl_s))
        if cache is None:
            cache = _OPEN[(directory, ttl_s)] = CompletionCache(directory, ttl_s=ttl_s)
        return cache
