"""Log lines: JSON (one object a line) or console, and the fields an operator needs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from pixelgate.logs import configure_logging, resolve_format
from pixelgate.observability import hooks

WAIT = {"Prefer": "wait=10"}


@pytest.fixture
def log_format(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    configure_logging("info", request.param, cache=False)
    # a logger used by an earlier test in this process keeps the configuration it cached
    monkeypatch.setattr(hooks, "log", structlog.get_logger("pixelgate.generations"))
    yield request.param
    structlog.reset_defaults()
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "pixelgate"]


@pytest.mark.parametrize("log_format", ["json"], indirect=True)
async def test_json_lines_carry_request_generation_account_provider_duration(
    log_format: str, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = await client.post(
        "/v1/generations",
        json={"prompt": "x", "provider": "refusing"},
        headers={**WAIT, "X-Request-ID": "req-log-test"},
    )
    assert answer.json()["status"] == "FAILED"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    record = next(r for r in lines if r["event"] == "generation_finished")
    assert record["generation_id"] == answer.json()["id"]
    assert record["request_id"] == "req-log-test"
    assert record["account"] == "admin"
    assert record["provider"] == "refusing"
    assert record["status"] == "FAILED"
    assert isinstance(record["duration_ms"], int)
    assert record["level"] == "info" and "timestamp" in record


@pytest.mark.parametrize("log_format", ["console"], indirect=True)
async def test_console_lines_are_for_people(
    log_format: str, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = await client.post(
        "/v1/generations", json={"prompt": "x", "provider": "refusing"}, headers=WAIT
    )
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "generation_finished" in line)
    assert f"generation_id={answer.json()['id']}" in line
    assert "provider=refusing" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_is_console_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr("sys.stderr", Tty())
    assert resolve_format("auto") == "console"
    monkeypatch.setattr("sys.stderr", Pipe())
    assert resolve_format("auto") == "json"
    assert resolve_format("console") == "console"
