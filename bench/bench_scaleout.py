"""Scale-out benchmark: N concurrent asynchronous jobs through 1 API + 1 worker process.

PostgreSQL (procrastinate queue) + Redis (bus) + storage (local disk by default, or any
``--storage-url`` such as ``s3://bucket/prefix`` with the AWS variables set), the
``placeholder`` provider at ``--latency-ms`` (2000 by default). Measures the time from the
first submission until every job is SUCCEEDED, the submission rate, and the peak memory
(VmHWM) and CPU time of each process. Writes ``bench/results/bench_scaleout-<UTC>.json``.

    .venv/bin/python bench/bench_scaleout.py                  # 5000 jobs, the issue's setup
    .venv/bin/python bench/bench_scaleout.py --jobs 500 --latency-ms 500

Needs PostgreSQL at 127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379; creates
and drops its own database ``pixelgate_bench_<random>``.
"""

# ruff: noqa: ASYNC220, ASYNC221, ASYNC240  (a driver script: blocking set-up outside timed parts)

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from benchlib.proc import stat_fields, status_kb
from benchlib.servers import export_ref, free_port
from benchlib.workdir import make_workdir

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "pg_bench_admin_key_0123456789abcdef"
PG = "postgresql://postgres@127.0.0.1:5432"


def _proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS (kB) and CPU seconds (utime+stime) of a live process."""
    out = {key: status_kb(pid, key) for key in ("VmHWM", "VmRSS")}
    try:
        fields = stat_fields(pid)
        out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _service_cpu_ticks() -> dict[str, int]:
    """CPU ticks (utime+stime) of every PostgreSQL and Redis server process on the machine."""
    totals = {"postgres": 0, "redis": 0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        service = next((s for s in totals if name.startswith(s)), None)
        if service is not None:
            fields = text.rsplit(")", 1)[1].split()
            totals[service] += int(fields[11]) + int(fields[12])
    return totals


async def _wait_ready(api: str, worker_log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(f"{api}/health/live")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("API not ready")
            await asyncio.sleep(0.1)
    while "worker running" not in worker_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError("worker not ready: " + worker_log.read_text()[-2000:])
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    dbname = f"pixelgate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    workdir, create_us = make_workdir("pixelgate-bench-scaleout-")
    config = workdir / "pixelgate.toml"
    config.write_text(
        f'[providers.bench]\nkind = "placeholder"\nlatency_ms = {args.latency_ms}\n\n'
        '[routing]\ndefault = ["bench"]\n'
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    env.update(
        {
            "PIXELGATE_DATA_DIR": str(workdir / "data"),
            "PIXELGATE_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}",
            "PIXELGATE_REDIS_URL": args.redis_url,
            "PIXELGATE_REDIS_PREFIX": f"bench-{secrets.token_hex(3)}",
            "PIXELGATE_STORAGE_URL": args.storage_url or f"file://{workdir / 'images'}",
            "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
            "PIXELGATE_CONFIG": str(config),
            "PIXELGATE_LOG_LEVEL": "warning",
            "PIXELGATE_LEASE_SECONDS": "30",
            "PIXELGATE_DB_POOL_SIZE": str(args.pool),
            "PIXELGATE_DB_MAX_OVERFLOW": "0",
        }
    )
    if args.git_ref:  # the API and worker import pixelgate from that committed tree
        env["PYTHONPATH"] = export_ref(args.git_ref, workdir)
    py = [sys.executable, "-m", "pixelgate"]
    subprocess.run([*py, "migrate"], env=env, check=True, capture_output=True)
    api_log, worker_log = workdir / "api.log", workdir / "worker.log"
    api = subprocess.Popen(
        [*py, "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=api_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [*py, "worker", "--concurrency", str(args.concurrency or args.jobs)],
        env=env,
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    try:
        await _wait_ready(base, worker_log)
        before = {"api": _proc_status(api.pid), "worker": _proc_status(worker.pid)}
        services_before = _service_cpu_ticks()
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        body = {"width": args.size, "height": args.size, "format": "png"}
        statuses: dict[int | str, int] = {}
        # aiohttp: an httpx client tops out near 400 requests/s here (MEASUREMENTS.md)
        import aiohttp

        connector = aiohttp.TCPConnector(limit=args.submit_concurrency)
        async with aiohttp.ClientSession(
            base_url=base,
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as http:
            queue = iter(range(args.jobs))

            async def submitter() -> None:
                for i in queue:
                    try:
                        async with http.post(
                            "/v1/generations", json={**body, "prompt": f"b{i}"}
                        ) as r:
                            await r.read()
                            code: int | str = r.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        code = type(exc).__name__
                    statuses[code] = statuses.get(code, 0) + 1

            t0 = time.monotonic()
            await asyncio.gather(*(submitter() for _ in range(args.submit_concurrency)))
            submitted = time.monotonic() - t0
            peaks: dict[str, int] = {"api": 0, "worker": 0}
            done = 0
            with psycopg.connect(f"{PG}/{dbname}", autocommit=True) as conn:
                while True:
                    for name, proc in (("api", api), ("worker", worker)):
                        peaks[name] = max(peaks[name], _proc_status(proc.pid).get("VmRSS", 0))
                    rows = conn.execute(
                        "SELECT status, count(*) FROM generations GROUP BY status"
                    ).fetchall()
                    counts = {s: int(n) for s, n in rows}
                    done = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
                    admitted = sum(counts.values())
                    if done >= admitted or time.monotonic() - t0 > args.timeout:
                        break
                    await asyncio.sleep(0.1)
                all_done = time.monotonic() - t0
                [(makespan,)] = conn.execute(
                    "SELECT extract(epoch FROM max(completed_at) - min(created_at)) "
                    "FROM generations"
                ).fetchall()
        after = {"api": _proc_status(api.pid), "worker": _proc_status(worker.pid)}
        services_after = _service_cpu_ticks()
        tick = os.sysconf("SC_CLK_TCK")
        result = {
            "jobs": args.jobs,
            "latency_ms": args.latency_ms,
            "image": f"{args.size}x{args.size} png",
            "storage": "s3" if args.storage_url else "local",
            "submit_statuses": statuses,
            "submit_s": round(submitted, 3),
            "submit_rps": round(args.jobs / submitted, 1),
            "all_done_s": round(all_done, 3),
            "server_makespan_s": round(float(makespan or 0), 3),
            "final_counts": counts,
            "timed_out": done < args.jobs,
            "aim_10s_met": done >= args.jobs and all_done <= 10,
            "processes": {
                name: {
                    "peak_rss_mb": round(max(after[name].get("VmHWM", 0), peaks[name]) / 1024, 1),
                    "idle_rss_mb": round(before[name].get("VmRSS", 0) / 1024, 1),
                    "cpu_s": round(
                        (after[name].get("cpu_ticks", 0) - before[name].get("cpu_ticks", 0)) / tick,
                        2,
                    ),
                }
                for name in ("api", "worker")
            },
        }
        result["services_cpu_s"] = {
            name: round((services_after[name] - services_before[name]) / tick, 2)
            for name in services_after
        }
        cpu_total = sum(p["cpu_s"] for p in result["processes"].values())
        cpu_total += sum(result["services_cpu_s"].values())
        result["cpu_ms_per_job"] = round(cpu_total * 1000 / max(1, args.jobs), 1)
        result["aim_500mb_met"] = all(p["peak_rss_mb"] < 500 for p in result["processes"].values())
        result["file_create_us"] = create_us
    finally:
        for proc in (api, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (api, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="image width = height")
    parser.add_argument("--concurrency", type=int, default=0, help="worker (default: --jobs)")
    parser.add_argument("--submit-concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=20, help="DB connections per process")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--storage-url", default=None)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--git-ref", default=None,
                        help="benchmark a committed tree (git archive) instead of the working tree")
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = asyncio.run(run(args))
    record = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": os.getloadavg(),
        },
        "result": result,
    }
    out = ROOT / "bench" / "results" / f"bench_scaleout-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
