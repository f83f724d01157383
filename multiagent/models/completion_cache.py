"""The completion cache: a diskcache-backed LangChain ``BaseCache`` under ``MULTIAGENT_HOME``.

Keys are the SHA-256 of the model's identity and generation parameters (LangChain's
``llm_string``: provider, model, base URL, temperature, max tokens, bound tools, stop words...)
and the *normalised* prompt: each message reduced to its type, stripped text, tool calls, tool
call id and name, so ids, usage counts and response metadata of earlier turns do not split
otherwise identical prompts.

Values are stored as JSON (``message_to_dict``), never pickled code, in SQLite
(:class:`~multiagent.models._cache_store.CacheStore`: one connection per process, not per
thread). Each hit or miss is counted before the lookup returns, in the process's memory-mapped
counter slot, so the counts are exact, survive restarts and a killed process, and are shared
by every process using the same home — without a SQLite commit per lookup. Answers are written
behind (:data:`WRITE_BEHIND_S`, one transaction for all pending): this process's lookups see
them at once, other processes within that delay; a process killed before the write loses only
those answers, which makes a later lookup a miss, counted honestly as one.

With ``MULTIAGENT_REDIS_URL`` set the same cache lives in Redis instead
(:class:`~multiagent.models._cache_redis.RedisCacheStore`): same keys and values, entries
expire on the server's clock, and each hit or miss is counted in the lookup's own round trip.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumps
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, Generation

from multiagent._metrics import get_metrics
from multiagent.models._cache_counters import read_stored
from multiagent.models._cache_store import CacheStore

if TYPE_CHECKING:  # redis is imported only when a cache lives there (see open_*)
    from multiagent.models._cache_redis import RedisCacheStore

_HITS, _MISSES = "hits", "misses"
#: Answers reach SQLite at most this long after they were made (see the module docstring).
WRITE_BEHIND_S = 0.5
_RECENT_KEYS = 64
_KEEP = ("content", "tool_calls", "tool_call_id", "name")
#: Message types whose normal form is their type and text alone (when they carry no name).
_PLAIN = frozenset({SystemMessage, HumanMessage})


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


def _normal_of(message: BaseMessage) -> dict[str, Any]:
    """:func:`_normal_message` of ``message``'s serialised form, read off the message itself."""
    kept: dict[str, Any] = {"type": type(message).lc_id()[-1]}
    for key in _KEEP:
        value: Any = getattr(message, key, None)
        if value is None or (isinstance(value, list | str) and not value):
            continue
        if key == "content" and isinstance(value, str):
            value = value.strip()
        if key == "tool_calls":
            value = [{"name": c.get("name"), "args": c.get("args")} for c in value]
        kept[key] = value
    return kept


def _message_json(message: BaseMessage) -> str:
    """The JSON of one message's normal form; plain text messages are remembered, because
    agents' system prompts come back on every call."""
    content = message.content
    if isinstance(content, str) and type(message) in _PLAIN and not message.name:
        return _plain_json(type(message).__name__, content)
    return json.dumps(_normal_of(message), sort_keys=True, ensure_ascii=False)


@functools.lru_cache(maxsize=512)
def _plain_json(kind: str, content: str) -> str:
    kept: dict[str, Any] = {"type": kind}
    if content:
        kept["content"] = content.strip()
    return json.dumps(kept, sort_keys=True, ensure_ascii=False)


def messages_key(messages: Sequence[BaseMessage], llm_string: str) -> str:
    """``cache_key(dumps(messages), llm_string)``, computed from the messages themselves.

    LangChain's cache path serialises the prompt with ``dumps`` only for the cache to parse it
    back and keep five fields (about 70 µs a call); reading those fields off the messages gives
    the same key. Content that plain JSON cannot encode takes the serialising path.
    """
    try:
        # what json.dumps gives for the list: its items' JSON joined by ", "
        normal = "[" + ", ".join(_message_json(m) for m in messages) + "]"
    except (TypeError, ValueError):
        bare = [m.model_copy(update={"id": None}) if m.id is not None else m for m in messages]
        return cache_key(dumps(bare), llm_string)
    return hashlib.sha256(f"{llm_string}\x00{normal}".encode()).hexdigest()


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

    def __init__(
        self,
        directory: Path,
        *,
        ttl_s: float | None = None,
        store: RedisCacheStore | None = None,
    ) -> None:
        """Open (or create) the cache in ``directory``; entries expire after ``ttl_s``.

        A ``store`` given (Redis, shared by every process) holds the entries and counters
        instead of ``directory``.
        """
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self._store: CacheStore | RedisCacheStore = (
            store
            if store is not None
            else CacheStore(
                self.directory / "entries",
                legacy_counters=self.directory / "stats",
                write_behind_s=WRITE_BEHIND_S,
                key_filter=True,
            )
        )
        # LangChain looks up and then updates with the same prompt string: its key is kept for
        # the update instead of parsing and hashing the prompt again (a few calls in flight)
        self._recent: dict[tuple[str, str], str] = {}
        self._recent_lock = threading.Lock()

    def _key(self, prompt: str, llm_string: str) -> str:
        """The pair's key, remembered for the update that follows a miss."""
        pair = (prompt, llm_string)
        key = self._recent.get(pair)
        if key is None:
            key = cache_key(prompt, llm_string)
            with self._recent_lock:
                self._recent[pair] = key
                if len(self._recent) > _RECENT_KEYS:
                    del self._recent[next(iter(self._recent))]
        return key

    def get(self, key: str) -> list[Generation] | None:
        """The generations stored under ``key`` (see :func:`cache_key`), counting a hit or
        a miss."""
        blob = self._store.get_and_count(key, None, found=_HITS, missing=_MISSES)
        hit = isinstance(blob, str)
        get_metrics().inc("completion_cache_hits_total" if hit else "completion_cache_misses_total")
        return _decode(blob) if hit else None

    def put(self, key: str, generations: RETURN_VAL_TYPE) -> None:
        """Store ``generations`` under ``key``."""
        self._store.set(key, _encode(generations), expire=self.ttl_s)

    def delete(self, key: str) -> None:
        """Remove the answer stored under ``key`` (no error when there is none)."""
        self._store.delete(key)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Return the cached generations for the pair, counting a hit or a miss."""
        return self.get(self._key(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations for the pair."""
        self.put(self._key(prompt, llm_string), return_val)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """As :meth:`lookup` (a local SQLite read is faster than a thread hop)."""
        return self.lookup(prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """As :meth:`update`."""
        self.update(prompt, llm_string, return_val)

    def flush(self) -> None:
        """Write the answers written behind now (other processes see them from here on)."""
        self._store.flush()

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry; pass ``counters=True`` to reset the hit/miss counters too."""
        self._store.clear(counters=bool(kwargs.get("counters")))

    async def aclear(self, **kwargs: Any) -> None:
        """As :meth:`clear`."""
        self.clear(**kwargs)

    def stats(self) -> CompletionCacheStats:
        """The exact counters and the number of entries."""
        return _stats(self._store.counters(), len(self._store))

    def close(self) -> None:
        """Close the underlying SQLite connection."""
        self._store.close()


class HeldAnswers:
    """The answers of calls made inside :func:`held_answers`, kept until they are judged.

    A structured answer is only worth keeping once it validates: stored at once, an answer
    that fails its schema would come back from the cache on every re-run and fail again. So
    the structured-output driver holds what its calls would store, and :meth:`accept` stores
    the answer it took, :meth:`reject` drops one it did not (and removes an answer that came
    from the cache and failed, so the next run asks the model again).
    """

    def __init__(self) -> None:
        # (cache, key, generations to store; None for an answer the cache gave)
        self._items: list[tuple[CompletionCache, str, RETURN_VAL_TYPE | None]] = []

    def hold(self, cache: CompletionCache, key: str, generations: RETURN_VAL_TYPE) -> None:
        """Keep ``generations`` for ``key`` until they are judged."""
        self._items.append((cache, key, generations))

    def came_from(self, cache: CompletionCache, key: str) -> None:
        """Note that the answer under ``key`` came from ``cache``."""
        self._items.append((cache, key, None))

    def accept(self) -> None:
        """Store the held answers: their caller took them."""
        items, self._items = self._items, []
        for cache, key, generations in items:
            if generations is not None:
                cache.put(key, generations)

    def reject(self) -> None:
        """Drop the held answers, and remove those the cache gave: they did not do."""
        items, self._items = self._items, []
        for cache, key, generations in items:
            if generations is None:
                cache.delete(key)


#: The answers being held in this context (see :func:`held_answers`), if any.
current_held: contextvars.ContextVar[HeldAnswers | None] = contextvars.ContextVar(
    "multiagent_held_answers", default=None
)


@contextmanager
def held_answers() -> Iterator[HeldAnswers]:
    """Hold the cache writes of the calls made inside the block until they are judged; what
    is still held when the block ends is dropped."""
    held = HeldAnswers()
    token = current_held.set(held)
    try:
        yield held
    finally:
        current_held.reset(token)
        held.reject()


def _stats(counts: dict[str, int], entries: int) -> CompletionCacheStats:
    return CompletionCacheStats(
        hits=counts.get(_HITS, 0), misses=counts.get(_MISSES, 0), entries=entries
    )


def stored_completion_stats(home: Path) -> CompletionCacheStats:
    """The completion cache's counters and entries as stored in data directory ``home``, read
    without opening the cache: for a process that may not write there (see
    :func:`~multiagent.models._cache_counters.read_stored`)."""
    return _stats(*read_stored(completion_cache_dir(Path(home)) / "entries"))


_OPEN: dict[tuple[Path, float | None], CompletionCache] = {}
_OPEN_LOCK = threading.Lock()


_BY_HOME: dict[tuple[Path, float | None], CompletionCache] = {}
_BY_REDIS: dict[tuple[str, float | None], CompletionCache] = {}


def open_completion_cache(
    home: Path, *, ttl_s: float | None = None, redis_url: str | None = None
) -> CompletionCache:
    """The process's completion cache for data directory ``home`` (opened once).

    Args:
        home: The data directory (where the embedded cache lives).
        ttl_s: Seconds an answer is kept (``None``: until evicted).
        redis_url: Keep the cache in this Redis, shared by every process, instead of ``home``.

    Raises:
        UsageError: ``redis_url`` is given and nothing answers there (one line).
    """
    if redis_url:
        with _OPEN_LOCK:
            cache = _BY_REDIS.get((redis_url, ttl_s))
            if cache is None:
                from multiagent.models._cache_redis import RedisCacheStore, cache_client

                store = RedisCacheStore(cache_client(redis_url), name="completions")
                cache = CompletionCache(completion_cache_dir(Path(home)), ttl_s=ttl_s, store=store)
                _BY_REDIS[(redis_url, ttl_s)] = cache
            return cache
    # an absolute home is looked up as given first: resolving a path costs a system call per
    # component, and pipelines ask for the cache once per model they build (a relative home
    # depends on the working directory, so it is always resolved)
    given = (Path(home), ttl_s)
    found = _BY_HOME.get(given) if given[0].is_absolute() else None
    if found is not None:
        return found
    directory = completion_cache_dir(Path(home)).resolve()
    with _OPEN_LOCK:
        cache = _OPEN.get((directory, ttl_s))
        if cache is None:
            cache = _OPEN[(directory, ttl_s)] = CompletionCache(directory, ttl_s=ttl_s)
        if given[0].is_absolute():
            _BY_HOME[given] = cache
        return cache
