"""A queued batch stopped on its budget resumes under a larger total: its unfinished items go back
on the queue, workers finish them, and its results and usage cover every item once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from multiagent.distributed.queue import GROUP, batch_key, load_manifest, stream_key
from multiagent.graphs.batch_budget import item_worst_case, least_text
from multiagent.models.budget_redis import NANO, RedisBudget, budget_key, to_nano
from multiagent.nodes.context import build_context
from multiagent.policies import load_settings
from tests.distributed._workers import Workers, batch_file, cli, stop_a_tight_batch, wait_until
from tests.integration._batch_cli import numbered_items

pytestmark = pytest.mark.redis

#: About three items' worst cases of two validators: some of the twelve finish, far from all.
BUDGET = 0.003


def stored(client: redis.Redis, batch_id: str, queue: str) -> dict[str, Any]:
    """Everything Redis keeps of ``batch_id`` and its queue (to show nothing changed)."""
    keys = [
        *client.scan_iter(match=f"multiagent:batch:{batch_id}*"),
        *client.scan_iter(match=f"multiagent:budget:batch:{batch_id}*"),
        stream_key(queue),
    ]
    found: dict[str, Any] = {"pending": client.xpending(stream_key(queue), GROUP)}
    for key in sorted(keys):
        kind = client.type(key)
        read = {
            "hash": client.hgetall, "set": client.smembers, "string": client.get,
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True), "stream": client.xrange,
        }[kind]  # fmt: skip
        found[key] = (kind, read(key))
    return found


def refused(*args: str, says: str) -> None:
    """``multiagent ARGS`` exits 2 with one line on stderr that holds ``says``."""
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_batch_stopped_on_its_budget_resumes_under_a_larger_total_and_every_item_runs_once(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    procs = stop_a_tight_batch(workers, client, tmp_path, queue="qr", budget=BUDGET)
    budget = RedisBudget(client, key=budget_key("batch", "tight"), cap_usd=None)
    wait_until(lambda: budget.report()["held_usd"] == 0)  # every item's hold closed
    before = json.loads(cli("batch", "results", "tight", "--json").stdout)
    assert before["state"] == "budget_exceeded"
    assert 0 < before["finished"] < 12
    spent = json.loads(cli("batch", "status", "tight", "--json").stdout)["budget"]["spent_usd"]

    # the stop says how to resume, as a local batch's does
    status = cli("batch", "status", "tight")
    hint = "stopped on its budget; resume with a larger budget: "
    assert hint in status.stdout
    command = status.stdout.split(hint)[1].split()
    assert command[:2] == ["multiagent", "validate"]
    assert command[-2:] == ["--budget", "USD"]

    # a total not above what is spent is refused, naming the values; nothing changes
    kept = stored(client, "tight", "qr")
    refused(
        *command[1:-1], str(spent), says=f"${spent:.6f} spent + $0.000000 held",
    )  # fmt: skip
    refused(*command[1:-2], says="--budget USD")  # a budgeted batch resumes with a total
    assert stored(client, "tight", "qr") == kept

    resumed = cli(*command[1:-1], "1", "--wait", "--json")
    assert resumed.exit_code in (0, 3, 4), resumed.output  # not stopped, not refused
    after = json.loads(resumed.stdout)
    assert after["state"] == "completed"
    assert [result["id"] for result in after["results"]] == [f"i{n}" for n in range(12)]
    assert all(result["responded"] == 2 for result in after["results"])
    assert len(after["verdicts"]) == 2 * 12
    # every item's calls were paid for once, before or after the resume
    assert after["usage"]["calls"] == 2 * 12
    shared = json.loads(cli("batch", "status", "tight", "--json").stdout)["budget"]
    assert spent < shared["spent_usd"] <= 1.0
    assert shared["budget_usd"] == 1.0
    assert shared["held_usd"] == 0.0
    stats = [workers.stop(proc) for proc in procs]
    assert sum(s["stored"] for s in stats) == 12

    # a completed batch does not resume: refused, nothing changes
    kept = stored(client, "tight", "qr")
    refused(*command[1:-1], "2", says="'tight' is completed, not stopped on its budget")
    assert stored(client, "tight", "qr") == kept


@pytest.mark.slow
def test_a_resume_whose_budget_cannot_run_the_next_item_is_refused_with_the_least_that_can(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stop_a_tight_batch(workers, client, tmp_path, queue="qt", budget=BUDGET)
    budget = RedisBudget(client, key=budget_key("batch", "tight"), cap_usd=None)
    wait_until(lambda: budget.report()["held_usd"] == 0)  # every item's hold closed
    spent = int(client.hget(budget_key("batch", "tight"), "spent") or 0)  # nano-USD
    finished = set(client.hkeys(batch_key("tight", "records")))
    following = next(i for i in numbered_items(12) if i["id"] not in finished)
    settings = load_settings()
    validators = load_manifest(client, "tight").validators
    worst = item_worst_case(build_context(settings), validators)(following["text"])
    kept = stored(client, "tight", "qt")
    # above what was spent, yet what it leaves cannot cover the next item's worst case
    given = (spent + to_nano(worst) // 2) / NANO
    least = (spent + to_nano(worst)) / NANO
    resume = ["validate", "--queue", "qt", "--thread", "tight", "--resume", "--budget"]
    refused(
        *resume, repr(given),
        says=f"--budget {given!r} USD cannot run another item of batch 'tight': "
        f"${spent / NANO:.6f} spent + $0.000000 held leave ${given - spent / NANO:.6f}, and its "
        f"next item {following['id']!r} may cost up to ${worst:.6f}; give at least --budget "
        f"{least_text(least)}",
    )  # fmt: skip
    assert stored(client, "tight", "qt") == kept  # nothing stored changed
    # the least it names runs one more item
    rest = cli(*resume, least_text(least), "--wait", "--json")
    assert rest.exit_code in (0, 1, 3, 4), rest.output
    ran = {r["id"]: r for r in json.loads(rest.stdout)["results"]}
    # one more item ran: whichever a worker admitted first (the items' worst cases are alike;
    # two workers race for the room, so it need not be the first unfinished one)
    newly = [i for i, r in ran.items() if i not in finished and r["responded"] == 2]
    assert len(newly) == 1, ran


def test_bad_resumes_exit_2_with_one_line_and_change_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    path = batch_file(tmp_path, 6)
    queued = cli("validate", "--batch", str(path), "--queue", "qb", "--budget", "1",
                 "--thread", "b1")  # fmt: skip
    assert queued.exit_code == 0, queued.output
    kept = stored(client, "b1", "qb")
    resume = ["validate", "--queue", "qb", "--thread", "b1", "--resume"]
    refused(*resume, "--budget", "2", says="'b1' is running, not stopped on its budget")
    refused("validate", "--queue", "qb", "--thread", "nope", "--resume", "--budget", "2",
            says="unknown batch 'nope'")  # fmt: skip
    refused(*resume[:3], "--resume", "--budget", "2", says="--resume needs --thread ID")
    refused(*resume, "--budget", "2", "--batch", str(path), says="--batch cannot be used")
    refused("validate", "--queue", "qz", "--thread", "b1", "--resume", "--budget", "2",
            says="'b1' is on queue 'qb', not 'qz'")  # fmt: skip
    assert stored(client, "b1", "qb") == kept

    # stopped, while a worker still holds one of its entries: it could still store its items,
    # or stop the batch again once resumed; refused until it has ended
    client.xreadgroup(GROUP, "elsewhere", {stream_key("qb"): ">"}, count=1)
    client.hset(batch_key("b1"), "stopped", "budget_exceeded")
    kept = stored(client, "b1", "qb")
    refused(*resume, "--budget", "2", says="still has entries taken by workers on queue qb (1)")
    assert stored(client, "b1", "qb") == kept


def test_entries_left_from_before_a_resume_are_skipped_so_each_item_runs_once(
    workers: Workers, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queued = cli(
        "validate", "--batch", str(batch_file(tmp_path, 6)), "--queue", "qs", "--validators", "2",
        "--budget", "1", "--thread", "left",
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    # stopped on its budget while no worker ran: its two entries are still on the queue
    client.hset(batch_key("left"), mapping={"stopped": "budget_exceeded", "last_error": "x"})
    resumed = cli("validate", "--queue", "qs", "--thread", "left", "--resume", "--budget", "2",
                  "--json")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["items"] == 6
    assert client.xlen(stream_key("qs")) == 4  # the two old entries and the two new ones
    status = json.loads(cli("batch", "status", "left", "--json").stdout)
    assert (status["state"], status["last_error"], status["budget"]["budget_usd"]) == (
        "running", None, 2.0,
    )  # fmt: skip

    proc = workers.start("--queue", "qs", "--concurrency", "2")
    wait_until(lambda: client.xlen(stream_key("qs")) == 0)
    stats = workers.stop(proc)
    results = json.loads(cli("batch", "results", "left", "--json").stdout)
    assert results["state"] == "completed"
    assert results["usage"]["calls"] == 2 * 6  # the old entries ran nothing
    assert (stats["stored"], stats["skipped"]) == (6, 6)


def test_a_batch_queued_without_a_budget_resumes_without_one(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queued = cli("validate", "--batch", str(batch_file(tmp_path, 5)), "--queue", "qn",
                 "--thread", "free")  # fmt: skip
    assert queued.exit_code == 0, queued.output
    # a chunk went past the workers' own budget per chunk (the profile's budget_usd)
    client.hset(batch_key("free"), "stopped", "budget_exceeded")
    status = cli("batch", "status", "free")
    assert "resume once it is raised: multiagent validate --queue qn --thread free --resume\n" in (
        status.stdout
    )
    resume = ["validate", "--queue", "qn", "--thread", "free", "--resume"]
    refused(*resume, "--budget", "1", says="queued without --budget")
    resumed = cli(*resume, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert (json.loads(resumed.stdout)["items"], client.xlen(stream_key("qn"))) == (5, 4)
    assert "budget" not in json.loads(cli("batch", "status", "free", "--json").stdout)
