"""``multiagent sim stats|reset`` with a ``--url`` that is no address: one line, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from multiagent.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["stats", "reset"])
@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:8089", "http://", "http://h:port"])
def test_a_bad_url_is_one_line_naming_it_and_exit_2(command: str, url: str) -> None:
    result = runner.invoke(app, ["sim", command, "--url", url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"--url {url!r}" in lines[0]
    assert "Traceback" not in result.output


def test_an_unreachable_simulator_is_still_exit_1() -> None:
    # a well-formed address nobody listens on is the world's failure, not bad input
    result = runner.invoke(app, ["sim", "stats", "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert "cannot reach the simulator" in result.stderr
