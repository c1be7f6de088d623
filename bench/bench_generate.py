#!/usr/bin/env python3
"""Benchmark pixelgate's synchronous ``POST /generate`` against a bare ASGI baseline.

What it does (loopback only, bounded in request count and in time):

1. Starts ``python -m pixelgate serve`` in a subprocess with a throw-away data dir, an
   admin key and a TOML config whose only route is a ``placeholder`` provider with
   ``latency_ms = 0`` (a second, ``latency_ms = 2000`` instance named ``slow`` is
   configured but only used by the waiting-jobs scenario).
2. Starts a *bare* baseline in another subprocess: a plain ASGI function (no framework)
   served by uvicorn with the same settings as ``pixelgate serve`` (uvloop, httptools,
   access log off) that answers every POST with the same bytes from memory.
3. Measures latency (p50/p90/p99/mean) and throughput of ``POST /generate`` (64x64 PNG)
   at each concurrency (default 1 and 64), for a fixed number of requests after a
   warm-up, against both servers in the same run. Load comes from client *processes*
   (``--clients``, default 1), each with one ``httpx.AsyncClient`` and a connection pool;
   client CPU, server CPU and whole-machine CPU are recorded for every phase, so a
   client-bound or machine-bound figure can be told apart from a server-bound one.
4. Waiting jobs: a fresh gateway with ``PIXELGATE_CONCURRENCY`` = the job count; submits
   N jobs to ``POST /v1/generations`` (202) on the 2-second provider as fast as it can,
   then polls until none is ``PENDING``/``PROCESSING``; reports the time until all are
   ``SUCCEEDED`` (ideal: 2 s) and the server's peak RSS (``VmHWM``).
5. Prints a table and writes JSON to ``bench/results/``.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_generate.py

``--help`` lists the knobs (request counts, concurrencies, client processes, job count,
time limits, ``--git-ref`` to benchmark a committed tree instead of the working tree).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib.load import install_uvloop
from benchlib.proc import cpu_s, machine_cpu, status_kb
from benchlib.report import fmt, git, machine, pct, table
from benchlib.servers import (
    ADMIN_KEY,
    APPS,
    LOOPBACK,
    ROOT,
    Server,
    export_ref,
    free_port,
    gateway,
    gateway_config,
)
from benchlib.workdir import make_workdir

# DESIGN.md §Performance principles (and the issue's c=1 overhead aim).
AIM_OVERHEAD_MS = 2.0
AIM_OVERHEAD_ISSUE_MS = 5.0
AIM_RPS = 1000.0
AIM_JOBS_S = 2.6
AIM_JOBS_MB = 150.0

# --- /proc helpers -------------------------------------------------------------------


def loaded_modules(pid: int) -> dict[str, bool]:
    """Whether the server really runs on uvloop and httptools (shared objects mapped)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    return {"uvloop": "uvloop" in maps, "httptools": "httptools" in maps}


def gateway_server(args: argparse.Namespace, work: Path, name: str, concurrency: int | None,
                   pythonpath: str | None) -> Server:
    return gateway(work, name, work / "pixelgate-fast.toml", python=args.python,
                           concurrency=concurrency, log_level=args.log_level,
                           pythonpath=pythonpath)


def package_origin(server: Server) -> str:
    """Where the gateway's interpreter imports pixelgate from (working tree or --git-ref)."""
    probe = subprocess.run([server.argv[0], "-c", "import pixelgate; print(pixelgate.__file__)"],
                           env=server.env, capture_output=True, text=True, timeout=60)
    return probe.stdout.strip() or probe.stderr.strip()[-300:]


def bare_server(args: argparse.Namespace, work: Path, body: bytes) -> Server:
    """``benchlib/apps/bare_asgi.py`` answering every request with ``body``."""
    (work / "bare_body.json").write_bytes(body)
    port = free_port()
    env = {**os.environ, "BENCH_BARE_BODY": str(work / "bare_body.json")}
    argv = [
        args.python, "-m", "uvicorn", "bare_asgi:app", "--app-dir", str(APPS),
        "--host", LOOPBACK, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--lifespan", "on",
    ]
    return Server("bare", argv, env, port, work / "bare.log")


# --- load generation (in client processes) -------------------------------------------


async def _load(url: str, n: int, concurrency: int, offset: int, headers: dict[str, str],
                clients: list[httpx.AsyncClient], expect: bytes,
                budget_s: float) -> tuple[list[float], int, int]:
    """``n`` POSTs with ``concurrency`` in flight; returns (latencies_s, errors, bytes).

    Lane ``k`` uses ``clients[k % len(clients)]``: one shared pooled client, or one
    single-connection client per lane. No request is started after ``budget_s``: a
    phase that runs out of time reports fewer requests instead of none.
    """
    latencies: list[float] = []
    errors = 0
    nbytes = 0
    counter = iter(range(offset, offset + n))
    perf = time.perf_counter
    stop_at = perf() + budget_s

    async def one_lane(client: httpx.AsyncClient) -> None:
        nonlocal errors, nbytes
        for i in counter:
            if perf() > stop_at:
                return
            body = b'{"prompt":"bench %d","options":{"width":64,"height":64}}' % i
            t0 = perf()
            try:
                resp = await client.post(url, content=body, headers=headers)
                ok = resp.status_code == 200 and expect in resp.content
                nbytes += len(resp.content)
            except httpx.HTTPError:
                ok = False
            latencies.append(perf() - t0)
            if not ok:
                errors += 1

    await asyncio.gather(*(one_lane(clients[k % len(clients)]) for k in range(concurrency)))
    return latencies, errors, nbytes


def client_process(spec: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One load-generating process: warm up, wait for the start signal, measure."""
    install_uvloop()

    async def main() -> dict[str, Any]:
        conc = spec["concurrency"]
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        headers = {"content-type": "application/json",
                   "authorization": f"Bearer {ADMIN_KEY}"}
        expect = spec["expect"].encode()
        if spec["client_mode"] == "pool":  # one client, one pool of `conc` connections
            clients = [httpx.AsyncClient(limits=limits, timeout=spec["timeout"])]
        else:  # one single-connection client per lane: no shared-pool bookkeeping
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            clients = [httpx.AsyncClient(limits=one, timeout=spec["timeout"])
                       for _ in range(conc)]
        try:
            _, warm_errors, _ = await _load(spec["url"], spec["warmup"], conc,
                                            spec["offset"] + 10_000_000, headers, clients,
                                            expect, spec["budget_s"])
            ready.put(warm_errors)
            loop = asyncio.get_running_loop()
            started = await loop.run_in_executor(None, go.wait, spec["wait_s"])
            if not started:
                return {"error": "no start signal"}
            cpu0, t0 = time.process_time(), time.monotonic()
            lat, errors, nbytes = await _load(spec["url"], spec["n"], conc, spec["offset"],
                                              headers, clients, expect, spec["budget_s"])
            t1, cpu1 = time.monotonic(), time.process_time()
        finally:
            for client in clients:
                await client.aclose()
        return {"latencies": lat, "errors": errors, "bytes": nbytes, "start": t0, "end": t1,
                "cpu_s": cpu1 - cpu0, "warm_errors": warm_errors}

    try:
        results.put(asyncio.run(main()))
    except Exception as exc:  # report, don't hang the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def run_phase(server: Server, *, concurrency: int, n: int, warmup: int, clients: int,
              expect: str, timeout: float, offset: int, client_mode: str,
              budget_s: float) -> dict[str, Any]:
    """One measured phase against one server, from ``clients`` processes."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    clients = max(1, min(clients, concurrency))
    procs = []
    warmup_total = 0
    for k in range(clients):
        share_c = concurrency // clients + (1 if k < concurrency % clients else 0)
        share_n = n // clients + (1 if k < n % clients else 0)
        share_w = max(share_c, warmup // clients)
        warmup_total += share_w
        spec = {"url": server.url + "/generate", "concurrency": share_c, "n": share_n,
                "warmup": share_w, "offset": offset + k * 1_000_000, "expect": expect,
                "timeout": timeout, "client_mode": client_mode, "budget_s": budget_s,
                "wait_s": budget_s + timeout + 60}
        proc = ctx.Process(target=client_process, args=(spec, ready, go, results), daemon=True)
        proc.start()
        procs.append(proc)
    warm_errors = 0
    try:
        for _ in procs:
            warm_errors += ready.get(timeout=budget_s + timeout + 60)
        time.sleep(0.2)  # let the warm-up's tail (worker wake-ups, GC) settle
        s_cpu0, (m_busy0, m_total0), w0 = cpu_s(server.pid), machine_cpu(), time.monotonic()
        go.set()
        outs = [results.get(timeout=budget_s + timeout + 60) for _ in procs]
        w1, s_cpu1, (m_busy1, m_total1) = time.monotonic(), cpu_s(server.pid), machine_cpu()
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    bad = [o["error"] for o in outs if "error" in o]
    if bad:
        raise RuntimeError(f"client failed: {bad[0]}")
    lat = sorted(x for o in outs for x in o["latencies"])
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    count = len(lat)
    server_cpu = s_cpu1 - s_cpu0
    client_cpu = sum(o["cpu_s"] for o in outs)
    ncpu = os.cpu_count() or 1
    machine_busy_cores = (
        (m_busy1 - m_busy0) / (m_total1 - m_total0) * ncpu if m_total1 > m_total0 else 0.0
    )
    return {
        "server": server.name,
        "concurrency": concurrency,
        "clients": clients,
        "client_mode": client_mode,
        "requests": count,
        "requests_planned": n,
        "truncated_by_budget": count < n,
        "errors": sum(o["errors"] for o in outs),
        "warmup_requests": warmup_total,
        "warmup_errors": warm_errors,
        "wall_s": wall,
        "rps": count / wall if wall > 0 else float("nan"),
        "p50_ms": pct(lat, 50) * 1000,
        "p90_ms": pct(lat, 90) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "mean_ms": sum(lat) / count * 1000 if count else float("nan"),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "response_bytes": sum(o["bytes"] for o in outs) / max(1, count),
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_req": server_cpu / count * 1000 if count else float("nan"),
        "server_cpu_cores": server_cpu / (w1 - w0),
        "client_cpu_s": client_cpu,
        "client_cpu_ms_per_req": client_cpu / count * 1000 if count else float("nan"),
        "client_cpu_cores": client_cpu / wall if wall > 0 else float("nan"),
        "machine_busy_cores": machine_busy_cores,
        "other_cpu_cores": max(0.0, machine_busy_cores - (server_cpu + client_cpu) / (w1 - w0)),
        "server_threads_after": status_kb(server.pid, "Threads"),
    }


# --- waiting jobs -------------------------------------------------------------------


async def jobs_scenario(server: Server, *, jobs: int, submit_concurrency: int,
                        timeout: float, poll_s: float) -> dict[str, Any]:
    """Submit ``jobs`` async jobs on the slow provider; time until all are SUCCEEDED."""
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=submit_concurrency + 4,
                          max_keepalive_connections=submit_concurrency + 4)
    rss_peak_sampled = 0
    rss_samples: list[tuple[float, int]] = []
    stop_sampler = asyncio.Event()
    pid = server.pid
    hwm_before = status_kb(pid, "VmHWM")
    rss_before = status_kb(pid, "VmRSS")
    threads_max = status_kb(pid, "Threads")
    cpu0 = cpu_s(pid)

    in_flight_max = 0
    in_flight_samples: list[tuple[float, int]] = []

    async def sampler(t0: float) -> None:
        """RSS and threads every 0.1 s from /proc; jobs in flight every 0.5 s (GET /health)."""
        nonlocal rss_peak_sampled, threads_max, in_flight_max
        tick = 0
        while not stop_sampler.is_set():
            rss = status_kb(pid, "VmRSS")
            rss_peak_sampled = max(rss_peak_sampled, rss)
            threads_max = max(threads_max, status_kb(pid, "Threads"))
            rss_samples.append((round(time.monotonic() - t0, 2), rss))
            if tick % 5 == 0:
                try:
                    resp = await client.get("/health")
                    n = int(resp.json()["checks"]["queue"]["in_flight"])
                    in_flight_max = max(in_flight_max, n)
                    in_flight_samples.append((round(time.monotonic() - t0, 2), n))
                except (httpx.HTTPError, KeyError, ValueError, TypeError):
                    pass
            tick += 1
            try:
                await asyncio.wait_for(stop_sampler.wait(), 0.1)
            except TimeoutError:
                pass

    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits,
                                 timeout=60.0) as client:
        ids: list[str] = []
        statuses: dict[int, int] = {}
        counter = iter(range(jobs))
        t0 = time.monotonic()
        sampler_task = asyncio.create_task(sampler(t0))

        async def submit_lane() -> None:
            for i in counter:
                body = {"prompt": f"wait {i}", "provider": "slow", "width": 64, "height": 64}
                try:
                    resp = await client.post("/v1/generations", json=body)
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                    if resp.status_code == 202:
                        ids.append(resp.json()["id"])
                except httpx.HTTPError:
                    statuses[-1] = statuses.get(-1, 0) + 1

        await asyncio.gather(*(submit_lane() for _ in range(submit_concurrency)))
        t_submitted = time.monotonic() - t0

        async def count(status: str) -> int:
            """Generations in ``status`` (1 = "some"), cheaply: one row per poll."""
            resp = await client.get("/v1/generations", params={"status": status, "limit": 1})
            resp.raise_for_status()
            return len(resp.json()["data"])

        polls = 0
        done_s: float | None = None
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            polls += 1
            if not await count("PENDING") and not await count("PROCESSING"):
                done_s = time.monotonic() - t0
                break
            await asyncio.sleep(poll_s)
        stop_sampler.set()
        await sampler_task
        cpu1 = cpu_s(pid)
        hwm_after = status_kb(pid, "VmHWM")

        # Verify and collect the server-side timestamps (paginated list, after timing).
        succeeded: list[dict[str, Any]] = []
        failed = 0
        for status in ("SUCCEEDED", "FAILED"):
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"status": status, "limit": 100}
                if cursor:
                    params["cursor"] = cursor
                resp = await client.get("/v1/generations", params=params)
                resp.raise_for_status()
                page = resp.json()
                if status == "SUCCEEDED":
                    succeeded.extend(page["data"])
                else:
                    failed += len(page["data"])
                cursor = page.get("next_cursor")
                if not page.get("has_more") or not cursor:
                    break

    mine = set(ids)
    ok = [g for g in succeeded if g["id"] in mine]

    def ts(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    makespan_s = None
    totals: list[float] = []
    queues: list[float] = []
    if ok:
        first = min(ts(g["created_at"]) for g in ok)
        last = max(ts(g["completed_at"]) for g in ok)
        makespan_s = (last - first).total_seconds()
        totals = sorted(float(g["timings"]["total_ms"] or 0) for g in ok)
        queues = sorted(float(g["timings"]["queue_ms"] or 0) for g in ok)
    return {
        "jobs": jobs,
        "submit_concurrency": submit_concurrency,
        "accepted_202": len(ids),
        "submit_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "submit_s": t_submitted,
        "submit_rps": len(ids) / t_submitted if t_submitted > 0 else float("nan"),
        "all_succeeded_s": done_s,
        "timed_out": done_s is None,
        "succeeded": len(ok),
        "failed": failed,
        "server_makespan_s": makespan_s,
        "job_total_ms_p50": pct(totals, 50) if totals else None,
        "job_total_ms_p99": pct(totals, 99) if totals else None,
        "job_total_ms_max": totals[-1] if totals else None,
        "job_queue_ms_p50": pct(queues, 50) if queues else None,
        "job_queue_ms_max": queues[-1] if queues else None,
        "drain_after_last_202_s": (done_s - t_submitted) if done_s is not None else None,
        "in_flight_max": in_flight_max,
        "in_flight_trace": in_flight_samples[:: max(1, len(in_flight_samples) // 60)],
        "polls": polls,
        "rss_before_mb": rss_before / 1024,
        "vmhwm_before_mb": hwm_before / 1024,
        "vmhwm_mb": hwm_after / 1024,
        "rss_peak_sampled_mb": rss_peak_sampled / 1024,
        "threads_max": threads_max,
        "server_cpu_s": cpu1 - cpu0,
        "rss_trace": rss_samples[:: max(1, len(rss_samples) // 60)],
    }


# --- reporting ----------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> str:
    out = []
    phases = results["sync"]
    header = ["server", "conc", "clients", "reqs", "err", "p50 ms", "p90 ms", "p99 ms",
              "mean ms", "req/s", "srv cpu ms/req", "srv cores", "cli cores", "other cores"]
    rows = [[p["server"], p["concurrency"], p["clients"], p["requests"], p["errors"],
             fmt(p["p50_ms"]), fmt(p["p90_ms"]), fmt(p["p99_ms"]), fmt(p["mean_ms"]),
             fmt(p["rps"], ".0f"), fmt(p["server_cpu_ms_per_req"]),
             fmt(p["server_cpu_cores"]), fmt(p["client_cpu_cores"]),
             fmt(p["other_cpu_cores"])] for p in phases]
    if rows:
        out += ["POST /generate (64x64 PNG)", table(rows, header), ""]
    ratios = results.get("ratios", {})
    if ratios:
        rows = [[str(c), fmt(r["p50_ratio"]), fmt(r["overhead_p50_ms"]),
                 fmt(r["overhead_mean_ms"]), fmt(r["rps_ratio"], ".3f"),
                 fmt(r["gateway_capacity_rps_per_core"], ".0f")]
                for c, r in ratios.items()]
        out += ["gateway vs bare",
                table(rows, ["conc", "p50 ratio", "overhead p50 ms", "overhead mean ms",
                             "rps ratio", "gw req/s per core (1000/cpu ms)"]), ""]
    jobs = results.get("jobs")
    if jobs:
        rows = [
            ["jobs submitted (202)", f"{jobs['accepted_202']}/{jobs['jobs']}"],
            ["submit time s", fmt(jobs["submit_s"])],
            ["admissions/s", fmt(jobs["submit_rps"], ".0f")],
            ["all SUCCEEDED after s (client)", fmt(jobs["all_succeeded_s"])],
            ["drain after the last 202 s", fmt(jobs["drain_after_last_202_s"])],
            ["jobs in flight at once (max of /health samples)", str(jobs["in_flight_max"])],
            ["job queue ms p50 / max (created -> started)",
             f"{fmt(jobs['job_queue_ms_p50'], '.0f')} / {fmt(jobs['job_queue_ms_max'], '.0f')}"],
            ["server makespan s (first created -> last completed)",
             fmt(jobs["server_makespan_s"])],
            ["succeeded / failed", f"{jobs['succeeded']} / {jobs['failed']}"],
            ["job total ms p50 / p99 / max", f"{fmt(jobs['job_total_ms_p50'], '.0f')} / "
             f"{fmt(jobs['job_total_ms_p99'], '.0f')} / {fmt(jobs['job_total_ms_max'], '.0f')}"],
            ["peak RSS MB (VmHWM)", fmt(jobs["vmhwm_mb"], ".1f")],
            ["idle RSS before MB", fmt(jobs["rss_before_mb"], ".1f")],
            ["server threads (max)", str(jobs["threads_max"])],
            ["server CPU s", fmt(jobs["server_cpu_s"])],
        ]
        out += [f"waiting jobs ({jobs['jobs']} on a {results['config']['slow_latency_ms']} ms "
                "provider; ideal 2 s)", table(rows, ["figure", "value"]), ""]
    warnings = {name: srv.get("log_warnings") for name, srv in results.get("servers", {}).items()
                if srv.get("log_warnings")}
    if jobs and jobs.get("log_warnings"):
        warnings["jobs-gateway"] = jobs["log_warnings"]
    if warnings:
        out += [f"server log warnings: {json.dumps(warnings)}", ""]
    aims = results.get("aims")
    if aims:
        rows = [[a["aim"], a["measured"], "met" if a["met"] else "MISSED"] for a in aims]
        out += ["DESIGN.md aims", table(rows, ["aim", "measured", ""]), ""]
    return "\n".join(out)


def compute_ratios(phases: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(p["server"], p["concurrency"]): p for p in phases}
    ratios: dict[str, Any] = {}
    for (name, conc), gw in by.items():
        if name != "gateway" or ("bare", conc) not in by:
            continue
        bare = by[("bare", conc)]
        ratios[str(conc)] = {
            "p50_ratio": gw["p50_ms"] / bare["p50_ms"],
            "overhead_p50_ms": gw["p50_ms"] - bare["p50_ms"],
            "overhead_mean_ms": gw["mean_ms"] - bare["mean_ms"],
            "rps_ratio": gw["rps"] / bare["rps"],
            "gateway_capacity_rps_per_core": 1000 / gw["server_cpu_ms_per_req"],
            "bare_capacity_rps_per_core": 1000 / bare["server_cpu_ms_per_req"],
        }
    return ratios


def check_aims(results: dict[str, Any]) -> list[dict[str, Any]]:
    aims = []
    r1 = results.get("ratios", {}).get("1")
    if r1:
        ov = r1["overhead_p50_ms"]
        aims.append({"aim": f"p50 added at c=1 <= {AIM_OVERHEAD_MS:g} ms (DESIGN)",
                     "measured": f"{ov:.2f} ms", "met": ov <= AIM_OVERHEAD_MS})
        aims.append({"aim": f"p50 added at c=1 < {AIM_OVERHEAD_ISSUE_MS:g} ms (issue)",
                     "measured": f"{ov:.2f} ms", "met": ov < AIM_OVERHEAD_ISSUE_MS})
    gw = [p for p in results["sync"] if p["server"] == "gateway"]
    if gw:
        best = max(gw, key=lambda p: p["rps"])
        aims.append({"aim": f">= {AIM_RPS:g} req/s per process",
                     "measured": f"{best['rps']:.0f} req/s at c={best['concurrency']} "
                                 f"({1000 / best['server_cpu_ms_per_req']:.0f}/s per core "
                                 "of server CPU)",
                     "met": best["rps"] >= AIM_RPS})
    jobs = results.get("jobs")
    if jobs:
        t = jobs["all_succeeded_s"]
        aims.append({"aim": f"{jobs['jobs']} waiting jobs done in <= {AIM_JOBS_S:g} s",
                     "measured": "timed out" if t is None else f"{t:.2f} s",
                     "met": t is not None and t <= AIM_JOBS_S})
        aims.append({"aim": f"... in <= {AIM_JOBS_MB:g} MB",
                     "measured": f"{jobs['vmhwm_mb']:.1f} MB",
                     "met": jobs["vmhwm_mb"] <= AIM_JOBS_MB})
    return aims


# --- main ---------------------------------------------------------------------------


def make_bare_body(kind: str, gateway_body: bytes) -> bytes:
    if kind == "gateway":
        return gateway_body  # byte-for-byte a real /generate answer: same size and shape
    from pixelgate.providers.placeholder import render_placeholder

    png = render_placeholder("bench", width=64, height=64)
    shape = json.loads(gateway_body) if gateway_body else {}
    shape["b64_json"] = base64.b64encode(png).decode()
    return json.dumps(shape, separators=(",", ":")).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--concurrency", default="1,64",
                   help="comma-separated concurrencies for POST /generate")
    p.add_argument("--requests-c1", type=int, default=300, help="measured requests at c=1")
    p.add_argument("--requests", type=int, default=2000,
                   help="measured requests at every concurrency > 1")
    p.add_argument("--warmup", type=int, default=100, help="warm-up requests per phase")
    p.add_argument("--clients", type=int, default=1,
                   help="client processes per phase (concurrency and requests are split)")
    p.add_argument("--client-mode", choices=("lanes", "pool"), default="lanes",
                   help="lanes: one single-connection httpx.AsyncClient per in-flight request "
                        "slot; pool: one httpx.AsyncClient whose pool holds all connections "
                        "(httpcore's pool costs several ms of client CPU per request at c=64)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every sync phase (gateway and bare alternate); medians kept")
    p.add_argument("--jobs", type=int, default=2000, help="waiting-jobs scenario size (0: skip)")
    p.add_argument("--job-latency-ms", type=int, default=2000, help="slow provider latency")
    p.add_argument("--submit-concurrency", type=int, default=64,
                   help="connections used to submit the jobs")
    p.add_argument("--jobs-timeout", type=float, default=180.0,
                   help="give up waiting for the jobs after this many seconds")
    p.add_argument("--poll", type=float, default=0.05, help="jobs poll interval, seconds")
    p.add_argument("--bare-body", choices=("gateway", "png"), default="gateway",
                   help="bare answer: a captured gateway /generate body (same bytes, same size)"
                        " or that body plus the 64x64 PNG inline as base64")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--phase-seconds", type=float, default=150.0,
                   help="time budget of one measured phase (and of its warm-up): no request "
                        "starts after it, so a slow server yields fewer requests, not a hang")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="PIXELGATE_LOG_LEVEL of the gateway (info is the default a user gets)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    p.add_argument("--git-ref", default=None,
                   help="benchmark this committed tree (git archive) instead of the working "
                        "tree; the venv still supplies the dependencies")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="hard limit for the whole run (the run is aborted past it)")
    return p.parse_args(argv)


def median_phase(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    pick = sorted(runs, key=lambda p: p["p50_ms"])[len(runs) // 2]
    return {**pick, "rounds": [{k: r[k] for k in ("p50_ms", "p99_ms", "rps",
                                                  "server_cpu_ms_per_req")} for r in runs]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    started = time.monotonic()

    def on_alarm(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"benchmark exceeded --max-seconds={args.max_seconds:g}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_seconds))

    work, create_us = make_workdir("pixelgate-bench-")
    gateway_config(work, slow_ms=args.job_latency_ms)  # pixelgate-fast.toml
    pythonpath = export_ref(args.git_ref, work) if args.git_ref else None
    servers: list[Server] = []
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": machine()["cpu"],
            "loadavg_before": os.getloadavg(),
            "file_create_us": create_us,
        },
        "config": {
            "concurrency": concurrencies, "requests_c1": args.requests_c1,
            "requests": args.requests, "warmup": args.warmup, "clients": args.clients,
            "client_mode": args.client_mode,
            "rounds": args.rounds, "jobs": args.jobs, "slow_latency_ms": args.job_latency_ms,
            "submit_concurrency": args.submit_concurrency, "bare_body": args.bare_body,
            "log_level": args.log_level, "git_ref": args.git_ref,
            "git_head": git("rev-parse", "HEAD"),
            "worktree_dirty": bool(git("status", "--porcelain", "--", "src")),
        },
        "sync": [],
    }
    try:
        # -- sync scenario: gateway + bare ------------------------------------------
        if concurrencies:
            gw = gateway_server(args, work, "gateway", None, pythonpath)
            servers.append(gw)
            gw.start()
            ready_s = gw.wait_ready("/health", 90)
            probe = httpx.post(gw.url + "/generate", timeout=30,
                               headers={"authorization": f"Bearer {ADMIN_KEY}"},
                               json={"prompt": "bench probe", "options": {"width": 64,
                                                                         "height": 64}})
            if probe.status_code != 200:
                raise RuntimeError(f"gateway probe: {probe.status_code} {probe.text[:500]}")
            body = make_bare_body(args.bare_body, probe.content)
            bare = bare_server(args, work, body)
            servers.append(bare)
            bare.start()
            bare.wait_ready("/", 30)
            results["servers"] = {
                "gateway": {"startup_s": ready_s, "modules": loaded_modules(gw.pid),
                            "package": package_origin(gw),
                            "response_bytes": len(probe.content),
                            "idle_rss_mb": status_kb(gw.pid, "VmRSS") / 1024,
                            "threads_idle": status_kb(gw.pid, "Threads")},
                "bare": {"modules": loaded_modules(bare.pid), "response_bytes": len(body),
                         "idle_rss_mb": status_kb(bare.pid, "VmRSS") / 1024},
            }
            log_lines_before = gw.log_lines()
            gw_requests = 0
            offset = 0
            for conc in concurrencies:
                n = args.requests_c1 if conc == 1 else args.requests
                per_server: dict[str, list[dict[str, Any]]] = {"gateway": [], "bare": []}
                for _ in range(args.rounds):
                    for server, expect in ((gw, '"success":true'), (bare, '"success":true')):
                        print(f"... {server.name} c={conc} n={n}", file=sys.stderr, flush=True)
                        phase = run_phase(server, concurrency=conc, n=n, warmup=args.warmup,
                                          clients=args.clients, expect=expect,
                                          timeout=args.request_timeout, offset=offset,
                                          client_mode=args.client_mode,
                                          budget_s=args.phase_seconds)
                        offset += 100_000_000
                        per_server[server.name].append(phase)
                        if server is gw:
                            gw_requests += phase["requests"] + phase["warmup_requests"]
                results["sync"] += [median_phase(per_server["gateway"]),
                                    median_phase(per_server["bare"])]
            results["servers"]["gateway"]["log_lines_per_request"] = (
                (gw.log_lines() - log_lines_before) / max(1, gw_requests))
            results["servers"]["gateway"]["rss_after_mb"] = status_kb(gw.pid, "VmRSS") / 1024
            results["servers"]["gateway"]["threads_after"] = status_kb(gw.pid, "Threads")
            results["servers"]["gateway"]["log_warnings"] = gw.log_warnings()
            for server in (bare, gw):
                server.stop()

        # -- waiting jobs ----------------------------------------------------------
        if args.jobs > 0:
            print(f"... waiting jobs n={args.jobs}", file=sys.stderr, flush=True)
            jg = gateway_server(args, work, "jobs-gateway", args.jobs, pythonpath)
            servers.append(jg)
            jg.start()
            jg.wait_ready("/health", 90)
            install_uvloop()
            results["jobs"] = asyncio.run(jobs_scenario(
                jg, jobs=args.jobs, submit_concurrency=args.submit_concurrency,
                timeout=args.jobs_timeout, poll_s=args.poll))
            results["jobs"]["log_lines"] = jg.log_lines()
            results["jobs"]["log_warnings"] = jg.log_warnings()
            jg.stop()
    except Exception as exc:  # keep what was measured; say what failed
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        signal.alarm(0)
        for server in servers:
            try:
                server.stop()
            except Exception:  # best effort
                if server.proc is not None:
                    server.proc.kill()
        results["elapsed_s"] = time.monotonic() - started
        results["machine"]["loadavg_after"] = os.getloadavg()
        if args.keep:
            results["workdir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["ratios"] = compute_ratios(results["sync"])
    results["aims"] = check_aims(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench_generate-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(summarize(results))
    print(f"machine: {results['machine']['nproc']} cores, Python "
          f"{results['machine']['python']}, load {results['machine']['loadavg_before'][0]:.2f}"
          f" before; elapsed {results['elapsed_s']:.0f} s")
    print(f"results: {path}")
    if "error" in results:
        print(f"INCOMPLETE RUN: {results['error']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
