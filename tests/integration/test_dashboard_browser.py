"""The dashboard in a real browser: headless Chromium driven by selenium, the server and the
runs in their own processes, all on 127.0.0.1.

Screenshots of every page go to ``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from multiagent._metrics import MetricsStore
from multiagent.observability.history import persist_metrics
from multiagent.policies import load_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "a-test-token-of-enough-length"
PAGES = ("overview", "runs", "threads", "backpressure")

if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):  # .ci/run installs both
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MULTIAGENT_", "OTEL_"))}
    env.update(MULTIAGENT_HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.update(extra)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server(home: Path, tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "server.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "multiagent", "metrics", "serve", "--port", "0"],
            env=_env(home, MULTIAGENT_METRICS_TOKEN=TOKEN),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, (line, log.read_text())
    try:
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stdout.close()
        sys.stderr.write(log.read_text())  # shown with a failing test's report


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _cli_run(home: Path, *args: str, latency: str = "0.02") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "multiagent", "run", *args],
        env=_env(home, MULTIAGENT_SIM__TOKEN_LATENCY_S=latency, MULTIAGENT_SIM__TTFT_S="0.05"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


_BLANK_JS = """
return [...document.querySelectorAll(arguments[0] + ' canvas')].map((c) => {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  return painted;
});
"""


def _seed_history(home: Path) -> None:
    """Calls in the history, so every overview chart has something to draw."""
    store = MetricsStore()
    for outcome in ("ok", "ok", "error"):
        store.inc("model_calls_total", labels={"model": "gpt-4o-mini", "outcome": outcome})
    store.inc("model_tokens_total", value=40, labels={"model": "gpt-4o-mini", "direction": "input"})
    store.inc("model_errors_total", labels={"model": "gpt-4o-mini", "kind": "rate_limit"})
    store.observe("model_latency_seconds", value=0.2, labels={"model": "gpt-4o-mini"})
    store.inc("completion_cache_hits_total")
    persist_metrics(load_settings(home=home), store=store)


def _show(driver: Any, page: str) -> None:
    driver.find_element(By.ID, f"tab-{page}").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, page).is_displayed())


def test_every_page_loads_with_no_console_errors_and_every_chart_draws(
    server: str, browser: Any, home: Path
) -> None:
    _seed_history(home)
    run = _cli_run(home, "Plan a bakery launch", "--json", latency="0")
    assert run.wait(timeout=120) == 0, run.stderr.read() if run.stderr else ""
    browser.get(server + "/")
    ARTIFACTS.mkdir(exist_ok=True)
    charts = WebDriverWait(browser, 15).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#overview .chart canvas")) == 6 or None
    )
    assert charts
    painted = browser.execute_script(_BLANK_JS, "#overview")
    assert len(painted) == 6
    assert all(p > 0 for p in painted), painted
    browser.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))
    _show(browser, "backpressure")
    WebDriverWait(browser, 15).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#limiters .chart canvas")) >= 3 or None
    )
    painted = browser.execute_script(_BLANK_JS, "#limiters")
    assert painted
    assert all(p > 0 for p in painted), painted
    browser.save_screenshot(str(ARTIFACTS / "dashboard-backpressure.png"))
    for page in ("runs", "threads"):
        _show(browser, page)
        browser.save_screenshot(str(ARTIFACTS / f"dashboard-{page}.png"))
    WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#thread-list tbody tr") or None
    )
    assert _errors(browser) == []


def test_the_tabs_are_reachable_and_switch_with_the_keyboard(server: str, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/")
    first = browser.find_element(By.ID, "tab-overview")
    first.send_keys(Keys.ARROW_RIGHT)
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "runs").is_displayed())
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "tab-runs"
    assert active.get_attribute("aria-selected") == "true"
    assert _errors(browser) == []


def _started(home: Path, thread: str) -> float | None:
    path = home / "runs.sqlite"
    if not path.exists():
        return None
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT started FROM runs WHERE thread_id = ?", (thread,)).fetchone()
    return float(row[0]) if row else None


def test_a_cli_run_appears_among_the_running_and_its_tokens_stream(
    server: str, browser: Any, home: Path
) -> None:
    browser.get(server + "/#runs")
    WebDriverWait(browser, 10).until(
        lambda d: "live" in d.find_element(By.ID, "stream-state").text or None
    )
    thread = "live-1"
    # slow tokens: the run stays live long enough to watch it grow on a busy machine
    run = _cli_run(home, "Write a launch note for our bakery", "--thread", thread, latency="0.08")
    try:
        card = f'#running [data-thread="{thread}"]'
        WebDriverWait(browser, 60, poll_frequency=0.05).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, card) or None
        )
        # pushed, not polled: it shows among the running while the run is still going (how fast
        # is a measure for a quiet machine, not a test's business)
        assert _started(home, thread) is not None
        lengths: list[int] = []

        def grew(driver: Any) -> bool:
            if not driver.find_elements(By.CSS_SELECTOR, card):
                raise AssertionError(f"the run left the running before it grew: {lengths}")
            texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{card} .stream pre")]
            lengths.append(sum(len(t) for t in texts))
            return len(set(lengths)) >= 3 and lengths[-1] > lengths[0]

        # the page re-renders the card as tokens arrive: an element read mid-render goes stale
        WebDriverWait(
            browser, 60, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(grew)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-live-run.png"))
    finally:
        assert run.wait(timeout=120) == 0, run.stderr.read() if run.stderr else ""
    WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#finished [data-thread="{thread}"]') or None
    )
    assert _errors(browser) == []


def _click(element_id: str) -> Any:
    """A wait condition that clicks the element once it is there (the page re-renders it)."""

    def click(driver: Any) -> bool:
        found = driver.find_elements(By.ID, element_id)
        if not found:
            return False
        found[0].click()
        return True

    return click


def _status(driver: Any) -> str | None:
    """The thread page's status (read in the page: it is re-rendered as it changes)."""
    found = driver.execute_script(
        "const s = document.getElementById('thread-status'); return s ? s.textContent : null;"
    )
    return str(found) if found else None


def test_approving_a_waiting_run_from_the_page_resumes_it(
    server: str, browser: Any, home: Path
) -> None:
    thread = "wait-1"
    run = _cli_run(home, "Plan a bakery launch", "--thread", thread, "--approve", "--json")
    run.wait(timeout=120)  # stdin is closed: nobody answers, the run waits at the plan
    browser.get(server + f"/#threads/{thread}")
    assert WebDriverWait(browser, 15).until(_status) == "awaiting_approval"
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
        _click("approve")
    )
    WebDriverWait(browser, 90, poll_frequency=0.25).until(lambda d: _status(d) == "completed")
    with closing(sqlite3.connect(home / "runs.sqlite")) as conn:  # the server ran the rest
        (status,) = conn.execute(
            "SELECT status FROM runs WHERE thread_id = ?", (thread,)
        ).fetchone()
    assert status == "completed"
    browser.save_screenshot(str(ARTIFACTS / "dashboard-thread-approved.png"))
    assert _errors(browser) == []


def _stream_state(driver: Any) -> str:
    return str(driver.find_element(By.ID, "stream-state").text)


def test_a_damaged_live_runs_file_is_said_on_the_page_and_cleared_once_it_is_gone(
    server: str, browser: Any, home: Path
) -> None:
    browser.get(server + "/#runs")
    WebDriverWait(browser, 15).until(lambda d: _stream_state(d) == "live")
    home.mkdir(parents=True, exist_ok=True)
    (home / "runs.sqlite").write_bytes(b"not a database " * 400)
    said = WebDriverWait(browser, 15).until(
        lambda d: _stream_state(d).startswith("live updates: damaged database") or None
    )
    assert said
    assert str(home / "runs.sqlite") in _stream_state(browser)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-damaged-live-file.png"))
    (home / "runs.sqlite").unlink()  # moved aside: the stream goes on where it was
    WebDriverWait(browser, 15).until(lambda d: _stream_state(d) == "live")
