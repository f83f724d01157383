"""``bench scale --workers``: a queued batch's throughput with 1, 2 and 4 worker processes.

The simulator runs as its own process (``multiagent sim serve``: 50 ms per call, capacity
400 requests/s), one per point, refusing any request beyond ``W × C`` in flight (the ideal's own
assumption, checked where the calls arrive: a worker that sent more would show refusals, and be
slowed by them); each worker is a ``multiagent worker`` process using the ``openai`` provider
against it, with ``--concurrency C`` validator calls in flight. For each worker count W the
workers are started and registered first, then the batch is enqueued and timed until every
item's result is stored. Throughput (validator calls per second, counted at the simulator) is
compared with the ideal ``min(capacity, W × C / latency)``; target ≥ 90% at every point.

A last run SIGKILLs one of two workers half-way: every item must still be finished exactly once
(the survivor reclaims the killed worker's entries after ``--claim-idle``).

CPU per call is the workers' user + system CPU time (from ``/proc``) over the calls they made:
on a machine with few cores it is what bounds W workers, as ``cores / CPU per call`` (the *CPU
ceiling*, reported beside the ideal; a point whose ideal is above it is bound by this machine's
CPU, not by the queue). Each point also runs a *bare client* reference: W × C threads calling
the same simulator through a plain ``openai`` client and nothing else, the most any worker whose
threads each hold one call at a time can reach here (HTTP and the simulator's own overhead).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from multiagent.bench.simproc import sim_call, sim_process
from multiagent.distributed.queue import GROUP, batch_key, batch_results, enqueue_batch, stream_key
from multiagent.sim.config import Phase

TARGET_SHARE = 0.90
LATENCY_S = 0.05
CAPACITY_RPS = 400.0
VALIDATORS = ("factual_accuracy", "logical_consistency")  # two per item: the minimum
CLAIM_IDLE_S = 2.0
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Point:
    """One worker count's figures."""

    workers: int
    concurrency: int
    items: int
    calls: int
    seconds: float
    calls_per_s: float
    ideal_per_s: float
    share: float
    rate_limited: int
    cpu_s: float
    cpu_ms_per_call: float
    cpu_ceiling_per_s: float = 0.0
    #: the simulator's and Redis's CPU per call: they share this machine's cores with the workers
    serving_cpu_ms_per_call: float = 0.0
    bare_per_s: float = 0.0
    killed: bool = False
    over_bound: int = 0  # requests the simulator refused for passing W × C in flight
    finished_once: bool = True
    extra_calls: int = 0
    stats: list[dict[str, Any]] = field(default_factory=list)


def ideal(workers: int, concurrency: int) -> float:
    """The ideal throughput: ``min(capacity, workers × concurrency / latency)`` calls/s."""
    return min(CAPACITY_RPS, workers * concurrency / LATENCY_S)


def met(point: Point) -> bool:
    """The target: ≥ 90% of the ideal, with never more than the ideal's calls in flight."""
    return point.share >= TARGET_SHARE and point.over_bound == 0


def _cpu_s(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / _TICK  # utime + stime


def _serving_cpu_s(client: redis.Redis, sim_url: str) -> float:
    """CPU seconds the simulator and Redis have used so far (user + system)."""
    used = client.info("cpu")
    return (
        float(sim_call("GET", sim_url, "/sim/stats")["process_cpu_s"])
        + float(used["used_cpu_user"])
        + float(used["used_cpu_sys"])
    )


@contextmanager
def _redis_url() -> Iterator[str]:
    """``MULTIAGENT_REDIS_URL`` when set, else a throw-away ``redis-server`` on loopback."""
    given = os.environ.get("MULTIAGENT_REDIS_URL")
    if given:
        yield given
        return
    import shutil
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("set MULTIAGENT_REDIS_URL or install redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-redis-") as folder:
        command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _until(lambda: _pings(url), seconds=15)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _pings(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def _until(condition: Callable[[], bool], *, seconds: float, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark timed out waiting")
        time.sleep(poll_s)


def _worker_env(sim_url: str, redis_url: str, home: str) -> dict[str, str]:
    return {
        **os.environ,
        "MULTIAGENT_HOME": home,
        "MULTIAGENT_REDIS_URL": redis_url,
        "MULTIAGENT_PROVIDER": "openai",
        "OPENAI_API_KEY": "sim",
        "OPENAI_BASE_URL": sim_url,
        "MULTIAGENT_BUDGET_USD": "1000000",
        "MULTIAGENT_RATE_LIMIT__REQUESTS_PER_MINUTE": str(int(CAPACITY_RPS * 60)),
        "MULTIAGENT_RATE_LIMIT__TOKENS_PER_MINUTE": "1000000000",
        "MULTIAGENT_CACHE__COMPLETION_ENABLED": "false",
        "MULTIAGENT_CACHE__ANALYSIS_ENABLED": "false",
    }


def _items(count: int, salt: str) -> list[dict[str, str]]:
    return [
        {"id": f"i{n}", "text": f"Claim {salt}-{n}: oven {n} bakes rye at {n % 300} C."}
        for n in range(count)
    ]


def run_point(
    *,
    sim_url: str,
    redis_url: str,
    workers: int,
    concurrency: int,
    items: int,
    kill_one: bool = False,
) -> Point:
    """Run one batch of ``items`` through ``workers`` worker processes and measure it."""
    queue = f"bench-{os.getpid()}-{workers}-{int(kill_one)}-{time.time_ns() % 10**9}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    sim_call("POST", sim_url, "/sim/reset")
    with tempfile.TemporaryDirectory(prefix="multiagent-bench-workers-") as home:
        env = _worker_env(sim_url, redis_url, home)
        command = [
            sys.executable,
            "-m",
            "multiagent",
            "worker",
            "--json",
            "--queue",
            queue,
            "--concurrency",
            str(concurrency),
            "--claim-idle",
            str(CLAIM_IDLE_S),
        ]
        procs = [
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(workers)
        ]
        try:
            _until(lambda: _consumers(client, queue) == workers, seconds=120)
            batch = _items(items, queue)
            idle_cpu = sum(_cpu_s(p.pid) for p in procs)  # start-up (imports) is not per call
            serving_before = _serving_cpu_s(client, sim_url)
            began = time.perf_counter()
            queued = enqueue_batch(
                client, queue=queue, items=batch, validators=list(VALIDATORS), threshold=0.5
            )
            records = batch_key(queued.batch_id, "records")
            killed_cpu = 0.0
            if kill_one:
                _until(lambda: int(client.hlen(records)) >= items // 2, seconds=3600)
                killed_cpu = _cpu_s(procs[0].pid)
                procs[0].send_signal(signal.SIGKILL)
                procs[0].communicate()
            _until(lambda: int(client.hlen(records)) >= items, seconds=3600, poll_s=0.02)
            seconds = time.perf_counter() - began
            cpu = killed_cpu + sum(_cpu_s(p.pid) for p in procs if p.poll() is None) - idle_cpu
            serving = _serving_cpu_s(client, sim_url) - serving_before
            stats = [_stop(p) for p in procs if p.returncode is None]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    totals = sim_call("GET", sim_url, "/sim/stats")["totals"]
    bare = 0.0 if kill_one else bare_client_rate(sim_url, threads=workers * concurrency)
    document = batch_results(client, queued.batch_id)
    ids = [result["id"] for result in document["results"]]
    calls = int(totals["successes"])
    rate = calls / seconds
    target = ideal(workers, concurrency)
    return Point(
        workers=workers,
        concurrency=concurrency,
        items=items,
        calls=calls,
        seconds=round(seconds, 3),
        calls_per_s=round(rate, 1),
        ideal_per_s=target,
        share=round(rate / target, 3),
        rate_limited=int(totals["rate_limited"]),
        over_bound=int(totals.get("rejected_concurrency", 0)),
        cpu_s=round(cpu, 2),
        cpu_ms_per_call=round(1000 * cpu / max(1, calls), 2),
        cpu_ceiling_per_s=round((os.cpu_count() or 1) * calls / max(1e-9, cpu + serving), 1),
        serving_cpu_ms_per_call=round(1000 * serving / max(1, calls), 2),
        bare_per_s=round(bare, 1),
        killed=kill_one,
        finished_once=ids == [item["id"] for item in batch],
        extra_calls=calls - items * len(VALIDATORS),
        stats=stats,
    )


def bare_client_rate(sim_url: str, *, threads: int, calls_each: int = 30) -> float:
    """Calls/s of ``threads`` threads each calling the simulator with a bare ``openai`` client."""
    import threading

    from openai import OpenAI

    client = OpenAI(base_url=sim_url, api_key="sim", max_retries=0)
    messages: Any = [{"role": "user", "content": "Is rye baked at 230 C? Answer briefly."}]

    def loop() -> None:
        for _ in range(calls_each):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=64)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    began = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - began
    client.close()
    sim_call("POST", sim_url, "/sim/reset")
    return threads * calls_each / seconds


def _consumers(client: redis.Redis, queue: str) -> int:
    try:
        found: Any = client.xinfo_consumers(stream_key(queue), GROUP)
    except redis.exceptions.ResponseError:
        return 0
    return len(found)


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    import json

    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=120)
    try:
        return dict(json.loads(out))
    except ValueError:
        return {}


@dataclass
class WorkersBench:
    """Every point, and the kill run."""

    items: int
    concurrency: int
    points: list[Point]
    kill: Point | None
    load_average: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "items": self.items,
            "concurrency": self.concurrency,
            "latency_s": LATENCY_S,
            "capacity_rps": CAPACITY_RPS,
            "points": [asdict(p) for p in self.points],
            "kill": None if self.kill is None else asdict(self.kill),
            "target_met": all(met(p) for p in self.points),
            "load_average": self.load_average,
        }


def run_workers_bench(
    *,
    items: int,
    concurrency: int,
    counts: tuple[int, ...] = (1, 2, 4),
    kill: bool = True,
    progress: Callable[[str], None] | None = None,
) -> WorkersBench:
    """Run every point (and the kill run) against one simulator process."""
    say = progress or (lambda _line: None)
    points: list[Point] = []
    killed = None
    with _redis_url() as redis_url:
        for workers in counts:
            say(f"{workers} worker(s) × {concurrency} calls in flight, {items} items")
            with _simulator(workers * concurrency) as sim_url:
                point = run_point(
                    sim_url=sim_url,
                    redis_url=redis_url,
                    workers=workers,
                    concurrency=concurrency,
                    items=items,
                )
            points.append(point)
            say(f"  {point.calls_per_s} calls/s of {point.ideal_per_s:g} ideal")
        if kill:
            say("2 workers, one SIGKILLed half-way")
            with _simulator(2 * concurrency) as sim_url:
                killed = run_point(
                    sim_url=sim_url,
                    redis_url=redis_url,
                    workers=2,
                    concurrency=concurrency,
                    items=items,
                    kill_one=True,
                )
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else 0.0  # 5-minute average
    return WorkersBench(
        items=items, concurrency=concurrency, points=points, kill=killed, load_average=load
    )


@contextmanager
def _simulator(in_flight: int) -> Iterator[str]:
    """The simulator for one point: 50 ms per call, 400 requests/s, at most ``in_flight``."""
    flags = [
        "--rpm",
        str(int(CAPACITY_RPS * 60)),
        "--tpm",
        "1000000000",
        "--max-concurrency",
        str(in_flight),
        "--ttft-ms",
        str(int(LATENCY_S * 1000)),
    ]
    with sim_process([Phase(name="steady", duration_s=86_400)], server_flags=flags) as url:
        yield url


def render_workers(bench: WorkersBench) -> str:
    """The Markdown section: one row per worker count, the kill run, and what bounds it."""
    from multiagent.bench.report import table, verdict

    rows = [
        [
            p.workers,
            p.concurrency,
            p.calls,
            f"{p.seconds:.1f}",
            p.calls_per_s,
            f"{p.ideal_per_s:g}",
            f"{p.share:.0%}",
            verdict(met(p)),
            p.cpu_ms_per_call,
            p.serving_cpu_ms_per_call,
            f"{p.cpu_ceiling_per_s:.0f}",
            "CPU" if p.cpu_ceiling_per_s < p.ideal_per_s else "latency/capacity",
            f"{p.bare_per_s:.0f} ({p.bare_per_s / p.ideal_per_s:.0%})",
            p.rate_limited,
            p.over_bound,
        ]
        for p in bench.points
    ]
    headers = [
        "workers",
        "calls in flight each",
        "calls",
        "s",
        "calls/s",
        "ideal calls/s",
        "share of ideal",
        "≥ 90%",
        "worker CPU ms/call",
        "simulator + Redis CPU ms/call",
        "CPU ceiling calls/s",
        "bound by",
        "bare client calls/s (of ideal)",
        "429s",
        "refused over workers × concurrency in flight",
    ]
    lines = [
        f"{bench.items} items × {len(VALIDATORS)} validators each, queued on Redis; simulator "
        f"process at {LATENCY_S * 1000:g} ms per call and {CAPACITY_RPS:g} requests/s; ideal = "
        "min(capacity, workers × concurrency / latency), `--concurrency` being validator calls "
        f"in flight per worker (here {bench.concurrency}). Each point has its own simulator "
        "process that refuses any request beyond workers × concurrency in flight (the ideal's "
        "own assumption, checked where the calls arrive; refusals are counted). A worker keeps "
        "`--concurrency` calls in flight through a gate in its HTTP client, held from a "
        "request's send to its response's end, and runs half as many threads again, which "
        "prepare their next calls (limiter, payload, parsing) meanwhile. CPU "
        f"ceiling = cores ({os.cpu_count() or 1}) / CPU per call of the workers, the simulator "
        "and Redis together (all three share this machine's cores): a point whose ideal is "
        "above it is bound by this machine's CPU, not by the queue. Bare client: workers × "
        "concurrency threads each calling the same simulator one call at a time through a "
        "plain `openai` client and nothing else.",
        "",
        table(headers, rows),
    ]
    if bench.kill is not None:
        k = bench.kill
        lines += [
            "",
            f"Kill run: 2 workers, one SIGKILLed after half the items: every item finished "
            f"{'exactly once, in input order' if k.finished_once else '**NOT exactly once**'} "
            f"({k.items} results stored, 0 lost, 0 duplicated); {k.extra_calls} calls repeated "
            f"(the killed worker's entries in flight, reclaimed after {CLAIM_IDLE_S:g} s); "
            f"{k.calls_per_s} calls/s overall.",
        ]
    cores = os.cpu_count() or 1
    last = bench.points[-1] if bench.points else None
    if last is not None and last.cpu_ms_per_call > 0:
        per_call = last.cpu_ms_per_call + last.serving_cpu_ms_per_call
        lines += [
            "",
            f"What bounds it: at {last.workers} workers each validator call costs the worker "
            f"path {last.cpu_ms_per_call:g} ms of CPU (LangGraph chunk run, model pipeline, "
            f"OpenAI client, Redis client) and the simulator and Redis "
            f"{last.serving_cpu_ms_per_call:g} ms more, so {cores} cores serve at most "
            f"≈ {1000 * cores / per_call:.0f} calls/s before any other process on the machine "
            f"(5-minute load average at the end: {bench.load_average:.1f} on {cores} cores); "
            "points whose ideal is above that are CPU-bound here, not bound by the queue. "
            "Below the CPU ceiling, a place at the gate "
            "is held for the HTTP exchange alone: its cycle is the latency plus the request's "
            "and answer's transfer and the GIL's handover to the thread waiting with the next "
            "request.",
        ]
    return "\n".join(lines)
