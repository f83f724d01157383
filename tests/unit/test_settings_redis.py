"""``MULTIAGENT_REDIS_URL``: read once, checked for form, masked in reports (as every URL is)."""

from __future__ import annotations

import pytest

from multiagent.errors import ConfigError
from multiagent.policies import load_settings


def test_no_redis_by_default() -> None:
    assert load_settings().redis_url is None


def test_a_redis_url_is_read_from_the_environment_and_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", "redis://user:secret@127.0.0.1:6390/2")
    settings = load_settings()
    assert settings.redis_url == "redis://user:secret@127.0.0.1:6390/2"
    assert settings.sources["redis_url"] == "env MULTIAGENT_REDIS_URL"
    assert settings.as_report()["redis_url"] == "redis://***@127.0.0.1:6390/2"


def test_every_url_in_the_report_hides_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIAGENT_CHECKPOINT_URL", "postgresql://bob:pg-secret@db:5432/x")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy:proxy-secret@127.0.0.1:8089/v1")
    report = load_settings().as_report()
    assert report["checkpoint_url"] == "postgresql://***@db:5432/x"
    assert report["openai_base_url"] == "http://***@127.0.0.1:8089/v1"
    assert "secret" not in str(report)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379", "the scheme must be one of redis://, rediss://, unix://"),
        ("redis://", "no host"),
        ("redis://127.0.0.1:99999", "Port out of range"),
        ("redis://127.0.0.1:6379/db", "the database 'db' is not a number"),
        ("unix://", "a unix:// URL needs a socket path"),
    ],
)
def test_a_malformed_redis_url_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("MULTIAGENT_REDIS_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"malformed MULTIAGENT_REDIS_URL {url!r} (from env MULTIAGENT_REDIS_URL)" in message
    assert reason in message
    assert "\n" not in message
