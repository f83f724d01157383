"""The simulator's schedule files, token buckets, headers and decisions, on a manual clock."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from multiagent.errors import UsageError
from multiagent.sim.config import Phase, SimServerConfig, build_sim_config
from multiagent.sim.limits import TokenBucket, format_reset, retry_headers
from multiagent.sim.schedule import PhaseClock, load_schedule, parse_schedule
from multiagent.sim.state import Admitted, Refused
from tests.unit._sim_clock import ManualClock, sim_state

# -- schedule files -------------------------------------------------------------------------


def test_json_and_toml_schedules_read_alike(tmp_path: Path) -> None:
    phases = [
        {"name": "steady", "duration_s": 2, "rpm": 120},
        {"name": "cut", "duration_s": 1.5, "rpm": 30, "tpm": 5000, "error_rate": 0.1},
        {"name": "slow", "duration_s": 1, "latency_multiplier": 3},
    ]
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"phases": phases}))
    bare_json = tmp_path / "bare.json"
    bare_json.write_text(json.dumps(phases))
    as_toml = tmp_path / "s.toml"
    as_toml.write_text(
        '[[phases]]\nname = "steady"\nduration_s = 2\nrpm = 120\n\n'
        '[[phases]]\nname = "cut"\nduration_s = 1.5\nrpm = 30\ntpm = 5000\nerror_rate = 0.1\n\n'
        '[[phases]]\nname = "slow"\nduration_s = 1\nlatency_multiplier = 3\n'
    )
    loaded = load_schedule(as_json)
    assert loaded == load_schedule(bare_json) == load_schedule(as_toml)
    assert [p.name for p in loaded] == ["steady", "cut", "slow"]
    assert loaded[1].tpm == 5000
    assert loaded[1].error_rate == 0.1


def test_phases_inherit_base_values_and_the_last_holds() -> None:
    config = SimServerConfig(
        rpm=600,
        tpm=90_000,
        ttft_s=0.1,
        token_latency_s=0.01,
        schedule=(
            Phase(name="a", duration_s=1, rpm=60),
            Phase(name="b", duration_s=2, latency_multiplier=4, max_concurrency=2),
        ),
    )
    a, b = config.resolved_phases()
    assert (a.rpm, a.tpm, a.duration_s, a.ttft_s) == (60, 90_000, 1, 0.1)
    assert (b.rpm, b.max_concurrency, b.duration_s) == (600, 2, None)
    assert b.ttft_s == pytest.approx(0.4)
    assert b.token_latency_s == pytest.approx(0.04)
    assert a.requests_per_s == 1.0
    assert b.tokens_per_s == 1500.0
    assert [p.name for p in SimServerConfig().resolved_phases()] == ["steady"]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("[]", ".json", "needs a non-empty list of phases"),
        ("{not json", ".json", "is not valid JSON"),
        ("phases = [", ".toml", "is not valid TOML"),
        ("phases: []", ".yaml", "unknown format '.yaml'; use .json or .toml"),
        ('{"stages": []}', ".json", "unknown top-level key 'stages'"),
        ('[{"name": "a", "duration_s": 1, "rps": 5}]', ".json", "unknown key 'rps'; valid keys:"),
        ('[{"name": "a", "duration_s": 1, "rpm": -5}]', ".json", "phase 1 ('a'): rpm=-5"),
        ('[{"name": "a"}]', ".json", "missing key 'duration_s'"),
        ('[{"name": "a", "duration_s": 0}]', ".json", "duration_s=0: input should be greater"),
        ('[{"name": "a", "duration_s": 1, "error_rate": 2}]', ".json", "error_rate=2"),
        ('[{"name": "a", "duration_s": 1}, {"name": "a", "duration_s": 1}]', ".json", "twice"),
        ('[{"name": "a", "duration_s": 1}, 3]', ".json", "phase 2 is not a table"),
    ],
)
def test_malformed_schedules_are_usage_errors(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"schedule{suffix}"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        load_schedule(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value).strip()


def test_missing_unreadable_or_directory_schedule_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"absent\.toml does not exist"):
        load_schedule(tmp_path / "absent.toml")
    with pytest.raises(UsageError, match="is a directory; give a file"):
        load_schedule(tmp_path)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'[{"name": "caf\xe9", "duration_s": 1}]')
    with pytest.raises(UsageError, match=r"latin1\.json is not valid UTF-8 \(byte 0xe9"):
        load_schedule(latin1)
    marked = tmp_path / "marked.json"
    marked.write_bytes(b'\xef\xbb\xbf[{"name": "steady", "duration_s": 1}]')
    assert [phase.name for phase in load_schedule(marked)] == ["steady"]


def test_bad_base_settings_name_the_flag() -> None:
    with pytest.raises(UsageError, match=r"--rpm=-1: input should be greater than 0"):
        build_sim_config(flag_names={"rpm": "--rpm"}, rpm=-1)
    assert build_sim_config(rpm=5).rpm == 5


def test_phase_clock_boundaries() -> None:
    phases = SimServerConfig(
        schedule=parse_schedule(
            [
                {"name": "a", "duration_s": 1},
                {"name": "b", "duration_s": 2},
                {"name": "c", "duration_s": 1},
            ]
        )
    ).resolved_phases()
    clock = PhaseClock(phases, start=10.0)
    assert [clock.index_at(t) for t in (10.0, 10.99, 11.0, 12.99, 13.0, 500.0)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert (clock.start_of(1), clock.end_of(1), clock.end_of(2)) == (11.0, 13.0, None)


# -- buckets and headers --------------------------------------------------------------------


def test_bucket_refills_continuously_up_to_its_burst() -> None:
    bucket = TokenBucket.full(2.0, burst_s=1.0, now=0.0)
    assert bucket.capacity == 2.0
    assert bucket.wait_for(1) == 0.0
    bucket.take(1)
    bucket.take(1)
    assert bucket.wait_for(1) == pytest.approx(0.5)
    bucket.advance(0.25)
    assert bucket.level == pytest.approx(0.5)
    bucket.advance(10.0)
    assert bucket.level == 2.0  # never above the burst
    assert bucket.time_to_full() == 0.0


def test_oversized_request_waits_for_a_full_bucket_then_leaves_debt() -> None:
    bucket = TokenBucket.full(100.0, burst_s=1.0, now=0.0)  # 100 tokens/s, holds 100
    bucket.take(60)
    assert bucket.wait_for(250) == pytest.approx(0.6)  # until full, not until 250
    bucket.advance(0.6)
    bucket.take(250)
    assert bucket.level == pytest.approx(-150.0)
    assert bucket.remaining() == 0
    assert bucket.wait_for(1) == pytest.approx(1.51)


def test_retune_keeps_the_level_but_sheds_the_excess() -> None:
    bucket = TokenBucket.full(10.0, burst_s=1.0, now=0.0)
    bucket.retune(2.0, burst_s=1.0, now=0.0)
    assert (bucket.capacity, bucket.level, bucket.rate) == (2.0, 2.0, 2.0)
    bucket.take(2)
    bucket.retune(50.0, burst_s=1.0, now=0.5)
    assert bucket.level == pytest.approx(1.0)  # refilled at the old rate up to the change
    assert bucket.capacity == 50.0


def test_header_formats() -> None:
    assert retry_headers(1.2341) == {"retry-after": "2", "retry-after-ms": "1235"}
    assert retry_headers(0.0001) == {"retry-after": "1", "retry-after-ms": "1"}
    assert retry_headers(2.0) == {"retry-after": "2", "retry-after-ms": "2000"}
    assert [format_reset(s) for s in (0.02, 1.25, 6.0, 125.5)] == ["20ms", "1.25s", "6s", "2m5.5s"]


# -- decisions ------------------------------------------------------------------------------


def test_requests_per_minute_and_early_arrivals() -> None:
    clock = ManualClock()
    state = sim_state(clock, rpm=60)  # one request per second, burst of one
    assert isinstance(state.admit(cost_tokens=10, pieces=5), Admitted)
    refused = state.admit(cost_tokens=10, pieces=5)
    assert isinstance(refused, Refused)
    assert (refused.status, refused.limit) == (429, "requests")
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["retry-after-ms"] == "1000"
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1s"
    clock.now += 0.4  # before the Retry-After just given: early, and refused again
    again = state.admit(cost_tokens=10, pieces=5)
    assert isinstance(again, Refused)
    assert again.headers["retry-after-ms"] == "600"
    clock.now += 0.6  # exactly at the deadline: not early, admitted
    assert isinstance(state.admit(cost_tokens=10, pieces=5), Admitted)
    counts = state.snapshot()["totals"]
    assert (counts["attempts"], counts["rate_limited"], counts["early"]) == (4, 2, 1)


def test_without_limit_headers_only_the_retry_after_is_told() -> None:
    clock = ManualClock()
    state = sim_state(clock, rpm=60, limit_headers=False)  # as vLLM, Ollama, llama.cpp's server
    admitted = state.admit(cost_tokens=10, pieces=5)
    assert isinstance(admitted, Admitted)
    assert admitted.headers == {}
    refused = state.admit(cost_tokens=10, pieces=5)
    assert isinstance(refused, Refused)
    assert refused.headers == {"retry-after": "1", "retry-after-ms": "1000"}
    advertising = sim_state(ManualClock(), rpm=60)
    assert "x-ratelimit-limit-requests" in advertising.admit(cost_tokens=10, pieces=5).headers


def test_tokens_per_minute_counts_prompt_plus_max_output() -> None:
    clock = ManualClock()
    state = sim_state(clock, tpm=6000)  # 100 tokens/s, holds 100
    first = state.admit(cost_tokens=80, pieces=1)
    assert isinstance(first, Admitted)
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    assert first.headers["x-ratelimit-reset-tokens"] == "800ms"
    refused = state.admit(cost_tokens=50, pieces=1)
    assert isinstance(refused, Refused)
    assert refused.limit == "tokens"
    assert refused.headers["retry-after-ms"] == "300"
    assert "Requested 50" in refused.message
    assert state.snapshot()["totals"]["rejected_tokens"] == 1


def test_a_request_over_a_minutes_tokens_is_refused_and_costs_the_bucket_nothing() -> None:
    clock = ManualClock()
    state = sim_state(clock, tpm=6000)
    refused = state.admit(cost_tokens=10**9, pieces=1)  # max_tokens=10**9 or so
    assert isinstance(refused, Refused)
    assert refused.status == 429
    assert refused.limit == "tokens"
    assert "Request too large" in refused.message
    assert "Requested 1000000000" in refused.message
    assert "retry-after" not in refused.headers  # waiting never makes it fit
    # it took nothing: the next request is served (admitted, it left 16 hours of debt)
    assert isinstance(state.admit(cost_tokens=80, pieces=1), Admitted)
    assert isinstance(state.admit(cost_tokens=6000, pieces=1), Refused)  # a minute's: fits later
    assert state.snapshot()["totals"]["rejected_tokens"] == 2


def test_concurrency_limit_names_when_a_slot_frees() -> None:
    clock = ManualClock()
    state = sim_state(clock, max_concurrency=1, ttft_s=0.5, token_latency_s=0.1)
    held = state.admit(cost_tokens=10, pieces=3)  # planned to finish 0.8 s from now
    assert isinstance(held, Admitted)
    clock.now += 0.3
    refused = state.admit(cost_tokens=10, pieces=3)
    assert isinstance(refused, Refused)
    assert refused.limit == "concurrency"
    assert refused.headers["retry-after-ms"] == "500"
    state.finish(held, completed=True, prompt_tokens=7, completion_tokens=3)
    assert isinstance(state.admit(cost_tokens=10, pieces=3), Admitted)
    totals = state.snapshot()["totals"]
    assert (totals["successes"], totals["tokens_served"], totals["rejected_concurrency"]) == (
        1,
        10,
        1,
    )


def test_phases_switch_limits_and_keep_their_own_counts() -> None:
    clock = ManualClock()
    schedule = parse_schedule(
        [
            {"name": "cut", "duration_s": 2, "rpm": 60},
            {"name": "raise", "duration_s": 5, "rpm": 600},
        ]
    )
    state = sim_state(clock, schedule=schedule)
    assert isinstance(state.admit(cost_tokens=1, pieces=1), Admitted)
    assert isinstance(state.admit(cost_tokens=1, pieces=1), Refused)
    clock.now += 2.0  # "raise" begins: 10/s, its bucket fills from the boundary on
    clock.now += 0.5
    admitted = [state.admit(cost_tokens=1, pieces=1) for _ in range(8)]
    # the one request "cut" had refilled by its end carries over, plus 0.5 s x 10/s
    assert sum(isinstance(a, Admitted) for a in admitted) == 6
    for decision in admitted:
        if isinstance(decision, Admitted):
            state.finish(decision, completed=True, prompt_tokens=1, completion_tokens=1)
    report = state.snapshot()
    cut, raised = report["phases"]
    assert cut["capacity_requests"] == 2.0
    assert raised["capacity_requests"] == pytest.approx(5.0)
    assert raised["goodput_share"] == pytest.approx(6 / 5)  # the carried-over burst
    assert report["current_phase"] == "raise"
    assert (cut["state"], cut["start_s"], cut["end_s"], cut["elapsed_s"]) == ("done", 0.0, 2.0, 2.0)
    assert cut["capacity"]["requests_per_s"] == 1.0
    assert raised["capacity"]["requests_per_s"] == 10.0
    assert (cut["counts"]["attempts"], cut["counts"]["rate_limited"]) == (2, 1)
    assert (raised["counts"]["attempts"], raised["counts"]["rate_limited"]) == (8, 2)
    assert raised["state"] == "active"
    assert raised["end_s"] is None
    assert cut["started_at"] == 1e9
    assert cut["ended_at"] == 1e9 + 2.0


def test_injected_faults_follow_the_seed() -> None:
    def outcomes(seed: int) -> list[int]:
        state = sim_state(ManualClock(), error_rate=0.4, seed=seed, rpm=1e9, tpm=1e12)
        results = [state.admit(cost_tokens=1, pieces=1) for _ in range(50)]
        return [r.status if isinstance(r, Refused) else 200 for r in results]

    first = outcomes(3)
    assert first == outcomes(3)
    assert first != outcomes(4)
    assert {500, 503} <= set(first) <= {200, 500, 503}
    assert 8 <= sum(status != 200 for status in first) <= 32


def test_spikes_add_latency_and_are_counted() -> None:
    state = sim_state(ManualClock(), spike_rate=1.0, spike_s=0.7, ttft_s=0.1)
    admitted = state.admit(cost_tokens=1, pieces=1)
    assert isinstance(admitted, Admitted)
    assert admitted.ttft_s == pytest.approx(0.8)
    assert state.snapshot()["totals"]["latency_spikes"] == 1


def test_reset_clears_counts_and_ignores_requests_from_before() -> None:
    clock = ManualClock()
    state = sim_state(clock, rpm=60)
    before = state.admit(cost_tokens=1, pieces=1)
    assert isinstance(before, Admitted)
    assert isinstance(state.admit(cost_tokens=1, pieces=1), Refused)
    state.reset()
    state.finish(before, completed=True, prompt_tokens=5, completion_tokens=5)
    assert isinstance(state.admit(cost_tokens=1, pieces=1), Admitted)  # bucket refilled
    totals = state.snapshot()["totals"]
    assert (totals["attempts"], totals["successes"], totals["early"]) == (1, 0, 0)


def test_snapshot_documents_the_capacity_model() -> None:
    report = sim_state(ManualClock()).snapshot()
    assert re.search(r"rpm/60 requests and tpm/60 tokens per second", report["capacity_model"])
    assert set(report["totals"]) >= {
        "attempts",
        "successes",
        "rate_limited",
        "server_errors",
        "early",
    }


@pytest.mark.parametrize(
    ("name", "text", "shown"),
    [
        ("rpm.json", '[{"name": "a", "duration_s": 1, "rpm": 1e999}]', "rpm=inf"),
        (
            "ttft.json",
            '[{"name": "a", "duration_s": 1}, {"name": "b", "duration_s": 1, "ttft_s": 1e999}]',
            "ttft_s=inf",
        ),
        ("nan.toml", '[[phases]]\nname = "a"\nduration_s = 1\ntpm = nan\n', "tpm=nan"),
        ("long.toml", '[[phases]]\nname = "a"\nduration_s = inf\n', "duration_s=inf"),
    ],
)
def test_a_schedule_of_infinite_or_nan_values_is_refused_naming_them(
    tmp_path: Path, name: str, text: str, shown: str
) -> None:
    # JSON's 1e999 and TOML's inf and nan parse as floats; the server started with them and
    # advertised "x-ratelimit-limit-requests: inf"
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_schedule(path)
    message = str(caught.value)
    assert shown in message
    assert "finite number" in message
    assert "\n" not in message


def test_a_config_of_infinite_values_is_refused() -> None:
    with pytest.raises(UsageError, match=r"rpm=inf: input should be a finite number"):
        build_sim_config(rpm=float("inf"))
