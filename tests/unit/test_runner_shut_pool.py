"""A task finishing after Ctrl-C shut LangGraph's pool is not reported as a traceback; other
``concurrent.futures`` errors still are."""

from __future__ import annotations

import logging

import pytest

import multiagent.graphs.runner  # noqa: F401  (installs the filter)


def _log(exc: BaseException) -> None:
    try:
        raise exc
    except type(exc):
        logging.getLogger("concurrent.futures").exception("exception calling callback for <Future>")


def test_a_write_refused_by_the_shut_pool_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        _log(RuntimeError("cannot schedule new futures after shutdown"))
    assert caplog.records == []


def test_other_callback_failures_are_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        _log(RuntimeError("something else broke"))
        _log(ValueError("cannot schedule new futures after shutdown"))
    assert [record.exc_info[1].__class__ for record in caplog.records if record.exc_info] == [
        RuntimeError,
        ValueError,
    ]
