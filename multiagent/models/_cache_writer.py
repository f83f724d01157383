"""The process's writer thread for cache stores that write their entries behind.

One daemon thread per process waits until a store has an entry to write, lets others gather
for the shortest registered delay, then has every registered store write what it holds
(:meth:`~multiagent.models._cache_store.CacheStore.flush`: one transaction each). It sleeps
while nothing is pending, so an idle process is never woken. At exit, every store writes what
is left. A forked child has no writer thread: its first entry starts one.
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
import weakref
from contextlib import suppress
from typing import Protocol


class _WritesBehind(Protocol):
    def flush(self) -> None:
        """Write every pending entry now."""


_STORES: weakref.WeakKeyDictionary[_WritesBehind, float] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_WRITER: threading.Thread | None = None
#: Set when an entry is written behind; the writer waits for it instead of polling.
_WAKE = threading.Event()
#: Set when a store registers: the writer's wait is then measured again (a shorter delay).
_REGISTERED = threading.Event()


def register_write_behind(store: _WritesBehind, *, delay_s: float) -> None:
    """Have the writer thread flush ``store`` about ``delay_s`` after its entries arrive."""
    with _LOCK:
        _STORES[store] = delay_s
    _REGISTERED.set()
    _ensure_writer()


def wake_writer() -> None:
    """Tell the writer thread that an entry is pending."""
    writer = _WRITER
    if writer is None or not writer.is_alive():
        _ensure_writer()
    _WAKE.set()


def _ensure_writer() -> None:
    global _WRITER
    with _LOCK:
        if _WRITER is None or not _WRITER.is_alive():
            _WRITER = threading.Thread(target=_write_behind, name="cache-write-behind", daemon=True)
            _WRITER.start()


def _write_behind() -> None:
    """Wait for a pending entry, let others gather for the shortest delay, write them all."""
    while True:
        _WAKE.wait()
        while True:
            _REGISTERED.clear()
            with _LOCK:
                delay = min(_STORES.values(), default=0.0)
            if not _REGISTERED.wait(timeout=delay):
                break  # the whole delay passed with no new store to wait less for
        _WAKE.clear()  # before the flush: an entry set after it wakes the next round
        with _LOCK:
            stores = list(_STORES)
        for store in stores:
            try:
                store.flush()
            except sqlite3.Error:  # a busy or closed database: tried again on the next round
                _WAKE.set()


def flush_write_behind() -> None:
    """Write every store's pending entries now (a command that ends leaves its answers on disk;
    the process's exit does the same)."""
    _flush_at_exit()


@atexit.register
def _flush_at_exit() -> None:
    with _LOCK:
        stores = list(_STORES)
    for store in stores:
        with suppress(sqlite3.Error):
            store.flush()
