"""N API processes + M worker processes of pixelgate, as real subprocesses on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.scaleout.services import free_port

ADMIN_KEY = "pg_cluster_admin_key_0123456789abcdef"
CONFIG = """
[providers.fast]
kind = "placeholder"
latency_ms = 200

[providers.slow]
kind = "placeholder"
latency_ms = 1500

[providers.nope]
kind = "placeholder"
latency_ms = 100
fail_rate = 1.0
fail_kind = "refused"

[routing]
default = ["fast"]
"""


@dataclass
class Proc:
    kind: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    apis: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    def _spawn(self, kind: str, args: list[str], port: int | None = None) -> Proc:
        index = len(self.apis) + len(self.workers)
        log = self.workdir / f"{kind}-{index}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", "pixelgate", *args],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return Proc(kind, popen, log, port)

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "pixelgate", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_api(self) -> Proc:
        port = free_port()
        proc = self._spawn("api", ["serve", "--no-worker", "--port", str(port)], port)
        self.apis.append(proc)
        return proc

    def start_worker(self, concurrency: int = 50) -> Proc:
        proc = self._spawn("worker", ["worker", "--concurrency", str(concurrency)])
        self.workers.append(proc)
        return proc

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            for api in self.apis:
                while True:
                    if api.popen.poll() is not None:
                        raise RuntimeError(f"API exited early:\n{api.tail()}")
                    try:
                        if (await http.get(f"{api.url}/health/live")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"API not ready:\n{api.tail()}")
                    await asyncio.sleep(0.1)
        # workers print their banner once the engine runs
        for worker in self.workers:
            while "worker running" not in worker.tail(200):
                if worker.popen.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker not ready:\n{worker.tail()}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        procs = [*self.apis, *self.workers]
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)


def cluster_env(
    workdir: Path, *, database_url: str, redis_url: str, s3_env: dict[str, str]
) -> dict[str, str]:
    config = workdir / "pixelgate.toml"
    config.write_text(CONFIG)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIXELGATE_", "AWS_")) and k not in ("PYTEST_CURRENT_TEST",)
    }
    env.update(
        {
            "PIXELGATE_DATA_DIR": str(workdir / "data"),
            "PIXELGATE_DATABASE_URL": database_url,
            "PIXELGATE_REDIS_URL": redis_url,
            "PIXELGATE_REDIS_PREFIX": f"cluster-{workdir.name[-8:]}",
            "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
            "PIXELGATE_CONFIG": str(config),
            "PIXELGATE_LEASE_SECONDS": "6",
            "PIXELGATE_POLL_INTERVAL_S": "0.5",
            "PIXELGATE_SHUTDOWN_GRACE_S": "5",
            "PIXELGATE_LOG_LEVEL": "warning",
            "PIXELGATE_DB_POOL_SIZE": "4",
            "PIXELGATE_DB_MAX_OVERFLOW": "2",
            **s3_env,
        }
    )
    return env


async def create_payer(api: str, name: str, credits: int) -> dict[str, str]:
    """An INTERNAL-tier (no quota) account with credits; returns its auth headers."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=api, headers=admin, timeout=10) as http:
        r = await http.post(
            "/admin/accounts", json={"name": name, "tier": "INTERNAL", "credits": credits}
        )
        assert r.status_code == 201, r.text
        r = await http.post(f"/admin/accounts/{name}/keys", json={})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['key']}"}


async def wait_all_terminal(
    http: httpx.AsyncClient,
    apis: list[str],
    ids: list[str],
    headers: dict[str, str],
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """Poll (alternating APIs) until every generation is terminal; returns the last bodies."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    turn = 0
    while len(done) < len(ids):
        for gen_id in [i for i in ids if i not in done]:
            turn += 1
            r = await http.get(f"{apis[turn % len(apis)]}/v1/generations/{gen_id}", headers=headers)
            body = r.json()
            if body.get("status") in ("SUCCEEDED", "FAILED", "CANCELED"):
                done[gen_id] = body
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                pending = {i: None for i in ids if i not in done}
                raise AssertionError(f"{len(pending)} generations never finished")
            await asyncio.sleep(0.25)
    return done
