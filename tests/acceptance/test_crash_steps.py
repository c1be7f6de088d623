"""SIGKILL at chosen steps of a job, not at chosen times.

The test holds SQLite's write lock from outside the server (``BEGIN EXCLUSIVE``): every
write the server tries from then on waits, so the process is frozen at a known step of
the job — after admission, with the provider's answer in hand inside the finishing
transaction, or with a cancel acknowledged — and is killed there. After a restart on
the same data directory every acknowledged job must end, charged at most once and
refunded at most once, and an acknowledged cancel must stay a cancel.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.conftest import (
    Server,
    ServerFactory,
    stream_events,
    wait_all_terminal,
    wait_processing,
)

ENV = {"PIXELGATE_LEASE_SECONDS": "2", "PIXELGATE_SHUTDOWN_GRACE_S": "2"}


def _config(latency_ms: int) -> str:
    return f"""
[providers.work]
kind = "placeholder"
latency_ms = {latency_ms}
price_usd = "0.01"

[routing]
default = ["work"]
"""


@contextmanager
def writes_frozen(data_dir: Path) -> Iterator[None]:
    """Hold the database's write lock: the server's writes wait (busy timeout 30 s)."""
    conn = sqlite3.connect(data_dir / "pixelgate.db", timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _kill(server: Server) -> None:
    server.proc.send_signal(signal.SIGKILL)
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    server.close_clients()


def _payer(api: httpx.Client, name: str, credits: int) -> httpx.Client:
    r = api.post(
        "/admin/accounts", json={"name": name, "credits": credits, "tier": "ENTERPRISE"}
    )
    assert r.status_code == 201, r.text
    key = api.post(f"/admin/accounts/{name}/keys", json={}).json()["key"]
    return httpx.Client(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _ledger(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/v1/account/ledger", params={"limit": 1000}).json()
    return body


def _audit(client: httpx.Client, ids: list[str], credits: int) -> dict[str, str]:
    """Every job ended; one debit each, a refund exactly for those not SUCCEEDED."""
    bodies = wait_all_terminal(client, ids, timeout=40)
    states = {gid: b["status"] for gid, b in bodies.items()}
    ledger = _ledger(client)
    kinds = Counter((e["generation_id"], e["kind"]) for e in ledger["entries"])
    for gid, status in states.items():
        assert kinds[(gid, "debit")] == 1, (gid, kinds)
        assert kinds[(gid, "refund")] == (0 if status == "SUCCEEDED" else 1), (gid, status)
        images = bodies[gid]["images"]
        assert len(images) == (1 if status == "SUCCEEDED" else 0), (gid, images)
    assert ledger["balance"] == sum(e["credits"] for e in ledger["entries"])
    spent = sum(1 for s in states.values() if s == "SUCCEEDED")
    assert ledger["balance"] == credits - spent
    return states


def _restart(start_server: ServerFactory, first: Server) -> Server:
    return start_server(
        config=_config(0), env=ENV, data_dir=first.data_dir, port=first.port
    )


def test_killed_right_after_admission(start_server: ServerFactory) -> None:
    first = start_server(config=_config(800), env=ENV)
    payer = _payer(first.client(), "after-admission", 10)
    ids = []
    for i in range(3):
        r = payer.post("/v1/generations", json={"prompt": f"a{i}", "width": 32, "height": 32})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    with writes_frozen(first.data_dir):  # nothing after the admissions reaches the disk
        _kill(first)
    payer.close()
    second = _restart(start_server, first)
    payer = _payer_again(second, payer)
    assert set(_audit(payer, ids, 10).values()) == {"SUCCEEDED"}


def test_killed_inside_the_finish_with_the_providers_answer(start_server: ServerFactory) -> None:
    first = start_server(config=_config(400), env=ENV)
    payer = _payer(first.client(), "inside-finish", 10)
    r = payer.post("/v1/generations", json={"prompt": "f", "width": 32, "height": 32})
    assert r.status_code == 202, r.text
    gen_id = r.json()["id"]
    wait_processing(payer, [gen_id], at_least=1, timeout=10)
    with writes_frozen(first.data_dir):
        time.sleep(1.2)  # the provider (0.4 s) has answered; the finish waits for the lock
        _kill(first)
    payer.close()
    second = _restart(start_server, first)
    payer = _payer_again(second, payer)
    assert _audit(payer, [gen_id], 10) == {gen_id: "SUCCEEDED"}
    _, events = stream_events(payer, gen_id, timeout=10)
    types = [e["event"] for e in events]
    assert types.count("succeeded") == 1, types
    assert types.count("started") == 2, types  # the first run's finish never committed


def test_an_acknowledged_cancel_survives_the_kill(start_server: ServerFactory) -> None:
    first = start_server(config=_config(5000), env=ENV)
    payer = _payer(first.client(), "cancelled", 10)
    r = payer.post("/v1/generations", json={"prompt": "c", "width": 32, "height": 32})
    gen_id = r.json()["id"]
    wait_processing(payer, [gen_id], at_least=1, timeout=10)
    cancel = payer.delete(f"/v1/generations/{gen_id}")
    assert cancel.status_code in (200, 202), cancel.text
    _kill(first)  # the worker may not have stopped the provider call yet
    payer.close()
    second = _restart(start_server, first)
    payer = _payer_again(second, payer)
    assert _audit(payer, [gen_id], 10) == {gen_id: "CANCELED"}


def test_a_cancel_caught_by_the_kill_is_never_half_done(start_server: ServerFactory) -> None:
    """The cancel is sent while writes are frozen, so it is never answered; after the
    restart the job is either cancelled (and refunded) or done (and charged), not both."""
    first = start_server(config=_config(1500), env=ENV)
    payer = _payer(first.client(), "pending-cancel", 10)
    r = payer.post("/v1/generations", json={"prompt": "p", "width": 32, "height": 32})
    gen_id = r.json()["id"]
    wait_processing(payer, [gen_id], at_least=1, timeout=10)
    answers: list[int] = []

    def send_cancel() -> None:
        try:
            answers.append(payer.delete(f"/v1/generations/{gen_id}", timeout=20).status_code)
        except httpx.HTTPError:
            answers.append(0)  # the connection died with the server

    with writes_frozen(first.data_dir):
        sender = threading.Thread(target=send_cancel)
        sender.start()
        time.sleep(0.5)  # the cancel is inside the server, waiting for the lock
        _kill(first)
    sender.join(timeout=20)
    assert answers == [0]  # never acknowledged
    payer.close()
    second = _restart(start_server, first)
    payer = _payer_again(second, payer)
    assert _audit(payer, [gen_id], 10)[gen_id] in ("SUCCEEDED", "CANCELED")


def _payer_again(server: Server, old: httpx.Client) -> httpx.Client:
    """The same key against the restarted server."""
    return httpx.Client(base_url=server.base_url, headers=dict(old.headers), timeout=30)
