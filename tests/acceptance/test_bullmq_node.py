"""The BullMQ bridge end to end: a real Node producer (``tests/node``), a real Redis, and a
``pixelgate bullmq`` process killed with SIGKILL half-way and started again.

100 jobs go in; every one completes exactly once (one generation per job, charged once),
the Node side's ``waitUntilFinished`` gets the image URLs, and the ledger adds up.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import ADMIN_KEY, base_env, placeholder_config
from tests.scaleout.services import REDIS_URL, require_redis

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
JOBS = 100
CREDITS = 1000
KILL_AFTER_COMPLETED = 25
QUEUE = "image-generate"
DEADLINE_S = 180.0


def ensure_node_modules() -> None:
    """``npm ci`` in tests/node when its ``node_modules`` is missing (a fresh clone, CI)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js (node and npm) is needed for the BullMQ end-to-end test")
    if (NODE_DIR / "node_modules" / "bullmq").is_dir():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {NODE_DIR} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture
def bull_prefix() -> Iterator[str]:
    require_redis()
    import redis

    prefix = f"pgtest-node-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed at teardown if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _completed(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.zcard(f"{prefix}:{QUEUE}:completed"))
    finally:
        client.close()


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_node_producer_jobs_complete_exactly_once_across_a_bridge_sigkill(
    tmp_path: Path, bull_prefix: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    ensure_node_modules()
    config = tmp_path / "pixelgate.toml"
    config.write_text(placeholder_config(latency_ms=300))
    env = base_env()
    env.update({
        "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
        "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
        "PIXELGATE_CONFIG": str(config),
        "PIXELGATE_LEASE_SECONDS": "3",
        "PIXELGATE_POLL_INTERVAL_S": "0.2",
        "PIXELGATE_PUBLIC_URL": "https://images.example.test",
    })
    created = subprocess.run(
        [sys.executable, "-m", "pixelgate", "accounts", "create", "producer",
         "--credits", str(CREDITS), "--tier", "ENTERPRISE"],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert created.returncode == 0, created.stderr

    def start_bridge(n: int) -> subprocess.Popen[bytes]:
        with (tmp_path / f"bridge-{n}.err").open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pixelgate", "bullmq", "--redis-url", REDIS_URL,
                 "--prefix", bull_prefix, "--account", "producer", "--concurrency", "10",
                 "--lock-seconds", "2"],
                env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            )
        processes.append(proc)
        return proc

    first = start_bridge(1)
    node_out = tmp_path / "node.out"
    with node_out.open("wb") as out, (tmp_path / "node.err").open("wb") as err:
        producer = subprocess.Popen(
            ["node", "producer.mjs", REDIS_URL, bull_prefix, QUEUE, str(JOBS)],
            cwd=NODE_DIR, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )
    processes.append(producer)

    def logs() -> str:
        return "\n".join(
            f"--- {f.name} ---\n{f.read_text(errors='replace')[-3000:]}"
            for f in [*sorted(tmp_path.glob("*.err")), node_out]
        )

    try:
        _wait_for(lambda: _completed(bull_prefix) >= KILL_AFTER_COMPLETED, 90, "completions")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    first.kill()  # SIGKILL: no chance to release its BullMQ locks or pixelgate leases
    first.wait(timeout=10)
    done_at_kill = _completed(bull_prefix)
    assert done_at_kill < JOBS, "the bridge was killed too late to test anything"

    start_bridge(2)
    assert producer.wait(timeout=DEADLINE_S) == 0, logs()
    # jobs the killed bridge had in hand came back and found their generations
    assert "replayed=True" in (tmp_path / "bridge-2.err").read_text(), logs()
    summary: dict[str, Any] = json.loads(node_out.read_text().splitlines()[-1])

    # the Node side: every job's waitUntilFinished returned the generation with its URLs
    assert summary["failed"] == [], summary["failed"][:3]
    assert summary["completed"] == JOBS
    results = summary["results"]
    assert len({r["jobId"] for r in results}) == JOBS
    assert len({r["generationId"] for r in results}) == JOBS  # one generation per job
    for r in results:
        assert len(r["imageUrls"]) == 1
        assert r["imageUrls"][0].startswith("https://images.example.test/files/ai/")
        assert len(r["images"][0]["sha256"]) == 64
    assert summary["progressEvents"] >= JOBS
    assert _completed(bull_prefix) == JOBS

    # pixelgate's side: exactly one generation per job, each charged once, none refunded
    db = sqlite3.connect(tmp_path / "data" / "pixelgate.db")
    try:
        (account_id, balance), = db.execute(
            "SELECT id, credits FROM accounts WHERE name = 'producer'"
        ).fetchall()
        gens = db.execute(
            "SELECT id, status, credits, idempotency_key FROM generations WHERE account_id = ?",
            (account_id,),
        ).fetchall()
        ledger = db.execute(
            "SELECT generation_id, kind, credits FROM ledger_entries WHERE account_id = ?",
            (account_id,),
        ).fetchall()
    finally:
        db.close()
    assert len(gens) == JOBS
    assert {g[0] for g in gens} == {r["generationId"] for r in results}
    assert {g[1] for g in gens} == {"SUCCEEDED"}
    assert sorted(g[3] for g in gens) == sorted(f"bullmq:{QUEUE}:{r['jobId']}" for r in results)
    debits = [row for row in ledger if row[1] == "debit"]
    assert len(debits) == JOBS and len({row[0] for row in debits}) == JOBS
    assert [row for row in ledger if row[1] == "refund"] == []
    spent = sum(g[2] for g in gens)
    assert spent == -sum(row[2] for row in debits)
    grants = sum(row[2] for row in ledger if row[1] == "grant")
    assert balance == grants - spent == CREDITS - spent
    # the images are stored where the URLs point
    for r in results:
        key = r["imageUrls"][0].split("/files/", 1)[1]
        assert (tmp_path / "data" / "images" / key).is_file()
