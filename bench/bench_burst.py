#!/usr/bin/env python3
"""Bursts against the embedded gateway (``pixelgate serve``: SQLite, in-process worker).

(a) **Sync burst**: ``--sync-n`` (2,000) requests at once, one connection each, to the
    OpenAI-compatible ``POST /v1/images/generations``; pixelgate's ``openai`` instance
    points at a fake OpenAI upstream that answers after ``--upstream-ms`` (2,000 ms).
    Reports wall time (first request to last answer), answers by status (200, 504 …),
    percentiles and the server's peak RSS; then the same burst through a bare forwarding
    proxy (``benchlib/apps/min_proxy.py``: one Python hop that only forwards, the floor
    for any Python gateway here) and straight to the fake, the ceiling.
(b) **Async jobs**: ``--async-n`` (10,000) ``POST /v1/generations`` (202) over
    ``--connections`` (256) keep-alive connections on the ``slow`` placeholder
    (``latency_ms = --job-ms``, 2,000), then polls until none is PENDING/PROCESSING.
    Reports the time from the first request until all are admitted (last 202) and until
    all are done, failures, peak RSS. In the same run the same client sends the same
    burst to a bare ASGI function answering 202: the admission ceiling.

Every server is a subprocess on a port in 18500-18599 (``BENCH_PORTS``) with a throw-away
data dir. Writes ``bench/results/bench_burst-<UTC>.json`` and prints a markdown table.

    .venv/bin/python bench/bench_burst.py                            # full: ~3-5 min today
    .venv/bin/python bench/bench_burst.py --sync-n 200 --async-n 1000   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import load, report, servers
from benchlib.proc import CpuMeter, CpuTimeline, PeakRss
from benchlib.servers import ADMIN_KEY, Servers

AUTH = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
OPENAI_BODY = {"model": "gpt-image-1", "prompt": "a red fox", "n": 1, "size": "1024x1024"}

# issue 13, "What to reach"
TARGET_SYNC_S, TARGET_SYNC_MB = 2.6, 150.0
TARGET_ASYNC_S, TARGET_ASYNC_MB = 10.0, 300.0


def _upstream_timeline(fake_url: str) -> dict[str, list[float]]:
    """The fake's arrival and answer times since the last call (the call clears them)."""
    with urllib.request.urlopen(fake_url + "/timeline", timeout=30) as resp:
        times: dict[str, list[float]] = json.loads(resp.read())
    return times


def _phased_burst(target: load.Target, n: int, fake_url: str) -> dict[str, Any]:
    """``load.burst`` plus where its time went: when the first and the last request
    reached the upstream and when it answered them, in seconds from the burst's start."""
    _upstream_timeline(fake_url)
    t0 = time.time()
    res = asyncio.run(load.burst(target, n=n))
    times = _upstream_timeline(fake_url)
    phases: dict[str, float | None] = {}
    for key in ("arrived", "answered"):
        seen = times[key]
        phases[f"upstream_first_{key}_s"] = round(min(seen) - t0, 3) if seen else None
        phases[f"upstream_last_{key}_s"] = round(max(seen) - t0, 3) if seen else None
    res["phases"] = phases
    return res


def sync_burst(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"n": args.sync_n, "upstream_ms": args.upstream_ms}
    with Servers() as started:
        fake = started.add(servers.app_server(work, "fake-openai", "fake_openai.py",
                                              "--latency-ms", str(args.upstream_ms)))
        fake.wait_ready("/health", 30)
        config = servers.gateway_config(work, upstream=fake.url, default="openai")
        gw = started.add(servers.gateway(work, "gateway-sync", config,
                                         concurrency=args.gateway_concurrency or args.sync_n,
                                         log_level=args.log_level,
                                         pythonpath=args.pythonpath))
        out["gateway_ready_s"] = round(gw.wait_ready("/health", 90), 3)
        route = "/v1/images/generations"
        target = load.Target(gw.url + route, load.json_body(OPENAI_BODY), AUTH,
                             load.expect(200, b'"data"'), timeout=args.request_timeout)
        probe = asyncio.run(load.burst(target, n=1))
        if probe["ok"] != 1:
            raise RuntimeError(f"probe of {route} failed: {probe['errors']}\n{gw.log_tail()}")
        print(f"... sync burst n={args.sync_n} -> pixelgate {route}", file=sys.stderr)
        with PeakRss([gw.pid]) as rss, CpuMeter(gw.pid) as cpu, CpuTimeline(gw.pid) as tl:
            res = _phased_burst(target, args.sync_n, fake.url)
        res["cores_by_quarter_s"] = tl.cores
        res.update(rss_start_mb=round(rss.start_mb, 1), rss_peak_mb=round(rss.peak_mb, 1),
                   server_cpu_s=round(cpu.seconds, 2),
                   log_warnings=gw.log_warnings())
        out["pixelgate"] = res
        gw.stop()

        if args.with_litellm:
            venv = servers.litellm_venv(args.litellm_venv, not args.no_install)
            if venv is not None:
                lite = started.add(servers.litellm(work, fake.url, venv))
                lite.wait_ready(servers.LITELLM_HEALTH, 120, ok_below=300)
                auth = {**AUTH, "authorization": f"Bearer {servers.LITELLM_KEY}"}
                via = load.Target(lite.url + route, target.body, auth, target.check,
                                  timeout=args.request_timeout)
                asyncio.run(load.burst(via, n=1))  # warm, like the others
                print(f"... sync burst n={args.sync_n} -> LiteLLM (peer)", file=sys.stderr)
                with PeakRss([lite.pid]) as rss, CpuMeter(lite.pid) as cpu:
                    res = _phased_burst(via, args.sync_n, fake.url)
                res.update(rss_start_mb=round(rss.start_mb, 1),
                           rss_peak_mb=round(rss.peak_mb, 1), server_cpu_s=round(cpu.seconds, 2))
                out["litellm"] = res
                lite.stop()

        bare = started.add(servers.app_server(work, "bare-proxy", "min_proxy.py",
                                              "--upstream", fake.url))
        bare.wait_ready("/health", 30)
        hop = load.Target(bare.url + route, target.body, AUTH, target.check,
                          timeout=args.request_timeout)
        asyncio.run(load.burst(hop, n=1))  # warm, like the others
        print(f"... sync burst n={args.sync_n} -> bare forwarding proxy (one Python hop)",
              file=sys.stderr)
        with PeakRss([bare.pid]) as rss, CpuMeter(bare.pid) as cpu, CpuTimeline(bare.pid) as tl:
            res = _phased_burst(hop, args.sync_n, fake.url)
        res["cores_by_quarter_s"] = tl.cores
        res.update(rss_start_mb=round(rss.start_mb, 1), rss_peak_mb=round(rss.peak_mb, 1),
                   server_cpu_s=round(cpu.seconds, 2))
        out["bare_proxy"] = res
        bare.stop()

        print(f"... sync burst n={args.sync_n} -> fake upstream (ceiling)", file=sys.stderr)
        direct = load.Target(fake.url + route, target.body, AUTH, target.check,
                             timeout=args.request_timeout)
        with PeakRss([fake.pid]) as rss:
            res = _phased_burst(direct, args.sync_n, fake.url)
        res.update(rss_start_mb=round(rss.start_mb, 1), rss_peak_mb=round(rss.peak_mb, 1))
        out["direct"] = res
    return out


async def _count(session: aiohttp.ClientSession, url: str, status: str) -> int:
    """1 when some generation has ``status``, else 0 (one row per poll: cheap)."""
    async with session.get(url, params={"status": status, "limit": "1"}, headers=AUTH,
                           timeout=aiohttp.ClientTimeout(total=30)) as resp:
        resp.raise_for_status()
        return len((await resp.json())["data"])


async def _poll_done(base: str, t0: float, timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll until no generation is PENDING or PROCESSING (or ``timeout_s`` after ``t0``)."""
    url = base + "/v1/generations"
    polls = 0
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - t0 < timeout_s:
            polls += 1
            try:
                busy = await _count(session, url, "PENDING") or await _count(
                    session, url, "PROCESSING")
            except (aiohttp.ClientError, TimeoutError):
                busy = 1
            if not busy:
                done = time.perf_counter() - t0
                failed = await _count(session, url, "FAILED")
                canceled = await _count(session, url, "CANCELED")
                return {"all_done_s": round(done, 3), "polls": polls,
                        "some_failed": bool(failed), "some_canceled": bool(canceled)}
            await asyncio.sleep(poll_s)
    return {"all_done_s": None, "polls": polls, "timed_out": True}


def async_jobs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"n": args.async_n, "connections": args.connections,
                           "job_ms": args.job_ms}
    body = load.json_body({"prompt": "a lighthouse", "provider": "slow", "width": 64,
                           "height": 64})
    with Servers() as started:
        bare = started.add(servers.app_server(work, "bare-asgi", "bare_asgi.py",
                                              "--status", "202"))
        bare.wait_ready("/health", 30)
        print(f"... async burst n={args.async_n} -> bare ASGI (ceiling)", file=sys.stderr)
        res = asyncio.run(load.burst(load.Target(bare.url + "/v1/generations", body, AUTH,
                                                 load.expect(202)),
                                     n=args.async_n, connections=args.connections))
        out["bare_admission"] = res
        bare.stop()

        config = servers.gateway_config(work, slow_ms=args.job_ms)
        gw = started.add(servers.gateway(work, "gateway-async", config,
                                         concurrency=args.gateway_concurrency or args.async_n,
                                         log_level=args.log_level,
                                         pythonpath=args.pythonpath))
        out["gateway_ready_s"] = round(gw.wait_ready("/health", 90), 3)
        ids: list[str] = []
        target = load.Target(gw.url + "/v1/generations", body, AUTH, load.expect(202),
                             timeout=args.request_timeout,
                             on_ok=lambda b: ids.append(json.loads(b)["id"]))
        print(f"... async burst n={args.async_n} -> pixelgate /v1/generations",
              file=sys.stderr)

        async def run() -> tuple[dict[str, Any], dict[str, Any]]:
            t0 = time.perf_counter()
            admitted = await load.burst(target, n=args.async_n, connections=args.connections)
            done = await _poll_done(gw.url, t0, args.async_timeout, args.poll)
            return admitted, done

        load.install_uvloop()
        with PeakRss([gw.pid]) as rss, CpuMeter(gw.pid) as cpu:
            admitted, done = asyncio.run(run())
        out["pixelgate"] = {
            "admission": admitted, "accepted_202": len(ids), "all_admitted_s": admitted["wall_s"],
            **done, "rss_start_mb": round(rss.start_mb, 1), "rss_peak_mb": round(rss.peak_mb, 1),
            "server_cpu_s": round(cpu.seconds, 2),
            "server_cpu_ms_per_job": round(cpu.per_request_ms(len(ids)), 2),
            "log_warnings": gw.log_warnings(),
        }
        out["ceiling_done_s"] = round(res["wall_s"] + args.job_ms / 1000, 3)
    return out


def _phases(res: dict[str, Any] | None) -> str:
    ph = (res or {}).get("phases") or {}
    keys = ("upstream_first_arrived_s", "upstream_last_arrived_s", "upstream_last_answered_s")
    if any(ph.get(k) is None for k in keys):
        return "-"
    return " / ".join(f"{ph[k]:.2f}" for k in keys)


def _cores(res: dict[str, Any] | None) -> str:
    cores = (res or {}).get("cores_by_quarter_s")
    return " ".join(f"{c:.1f}" for c in cores) if cores else "-"


def summary(r: dict[str, Any]) -> str:
    rows: list[list[Any]] = []
    s = r.get("sync")
    if s and "pixelgate" in s:
        p, d = s["pixelgate"], s.get("direct", {})
        n = s["n"]
        rows += [
            [f"{n:,} sync requests at once, upstream {s['upstream_ms']} ms: wall time",
             f"{p['wall_s']:.2f} s", f"{d.get('wall_s', float('nan')):.2f} s (direct)",
             f"≤ {TARGET_SYNC_S} s"],
            ["… answered 200", f"{p['ok']}/{n}", f"{d.get('ok', '-')}/{n}", f"{n}/{n}"],
            ["… failures by kind", json.dumps(p["errors"]) if p["errors"] else "none",
             json.dumps(d.get("errors")) if d.get("errors") else "none", "none"],
            ["… p50 / p99 of the 200s", f"{p['p50_ms']:.0f} / {p['p99_ms']:.0f} ms",
             f"{d.get('p50_ms', 0):.0f} / {d.get('p99_ms', 0):.0f} ms", ""],
            ["… peak RSS (server tree; at the start)",
             f"{p['rss_peak_mb']:.0f} MB ({p['rss_start_mb']:.0f})",
             f"{d.get('rss_peak_mb', 0):.0f} MB (fake)", f"≤ {TARGET_SYNC_MB:.0f} MB"],
        ]
    if s and "pixelgate" in s:
        rows.append(["… where the time went: the upstream got the first / the last request, "
                     "answered the last (s from the start)",
                     _phases(s.get("pixelgate")),
                     f"{_phases(s.get('direct'))} (direct); {_phases(s.get('bare_proxy'))} "
                     "(bare proxy)", ""])
        rows.append(["… the server's CPU in each quarter second, in cores (all its threads)",
                     _cores(s.get("pixelgate")), f"{_cores(s.get('bare_proxy'))} (bare proxy)",
                     ""])
    hop = s.get("bare_proxy") if s else None
    if s and hop:
        rows.append(["… the same burst through a bare forwarding proxy (one Starlette + "
                     "aiohttp hop: no auth, database, storage or accounting): wall time, "
                     "200s, peak RSS (start)",
                     f"{hop['wall_s']:.2f} s, {hop['ok']}/{s['n']}, {hop['rss_peak_mb']:.0f} MB "
                     f"({hop['rss_start_mb']:.0f})", "", ""])
    lite = s.get("litellm") if s else None
    if s and lite:
        rows.append(["… the same burst through LiteLLM (1 worker): wall time, 200s, peak RSS",
                     f"{lite['wall_s']:.2f} s, {lite['ok']}/{s['n']}, "
                     f"{lite['rss_peak_mb']:.0f} MB", "", ""])
    a = r.get("async")
    if a and "pixelgate" in a:
        p, b = a["pixelgate"], a["bare_admission"]
        rows += [
            [f"{a['n']:,} async jobs ({a['connections']} connections), {a['job_ms']} ms "
             "provider: all admitted", f"{p['all_admitted_s']:.2f} s "
             f"({p['accepted_202']} x 202)", f"{b['wall_s']:.2f} s (bare ASGI)", ""],
            ["… all done", (f"not within {r['config']['async_timeout']:g} s (timed out)"
                            if p.get("timed_out") else f"{p['all_done_s']:.2f} s")
             + (" (some FAILED)" if p.get("some_failed") else "")
             + (" (some CANCELED)" if p.get("some_canceled") else ""),
             f"{a['ceiling_done_s']:.2f} s (bare + provider)", f"≤ {TARGET_ASYNC_S:.0f} s"],
            ["… peak RSS", f"{p['rss_peak_mb']:.0f} MB", "", f"≤ {TARGET_ASYNC_MB:.0f} MB"],
            ["… server CPU per job", f"{p['server_cpu_ms_per_job']:.1f} ms", "", ""],
        ]
    return report.markdown(rows, ["figure", "pixelgate", "ceiling", "target"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sync-n", type=int, default=2000, help="sync burst size (0: skip)")
    p.add_argument("--upstream-ms", type=int, default=2000, help="fake upstream latency")
    p.add_argument("--async-n", type=int, default=10000, help="async jobs (0: skip)")
    p.add_argument("--connections", type=int, default=256, help="async burst connections")
    p.add_argument("--job-ms", type=int, default=2000, help="slow placeholder latency")
    p.add_argument("--gateway-concurrency", type=int, default=0,
                   help="PIXELGATE_CONCURRENCY (0: the burst size, so jobs never queue for "
                        "a worker slot)")
    p.add_argument("--request-timeout", type=float, default=180.0,
                   help="client timeout per request, s (pixelgate's own sync timeout is 60 s)")
    p.add_argument("--async-timeout", type=float, default=600.0,
                   help="give up polling this many s after the first async request")
    p.add_argument("--poll", type=float, default=0.2, help="poll interval, s")
    p.add_argument("--with-litellm", action="store_true",
                   help="also send the sync burst through the LiteLLM proxy (the peer)")
    p.add_argument("--litellm-venv", type=Path, default=servers.BENCH_DIR / ".venv-litellm")
    p.add_argument("--no-install", action="store_true",
                   help="do not install LiteLLM when its venv is missing (skip it instead)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--git-ref", default=None,
                   help="run pixelgate from this committed tree instead of the working tree")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load.install_uvloop()
    results: dict[str, Any] = report.header("bench_burst")
    results["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    with report.guarded_run(results, "pixelgate-bench-burst-", args.keep) as work:
        args.pythonpath = servers.export_ref(args.git_ref, work) if args.git_ref else None
        if args.sync_n > 0:
            results["sync"] = sync_burst(args, work)
        if args.async_n > 0:
            results["async"] = async_jobs(args, work)
    path = report.write_results("bench_burst", results)
    print(summary(results) + "\n")
    return report.footer(results, path)


if __name__ == "__main__":
    sys.exit(main())
