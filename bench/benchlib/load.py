"""Load clients that are not the bottleneck: aiohttp (closed loop and bursts) and ``wrk``.

An httpx ``AsyncClient`` tops out near 400 requests/s on the 2-core machine; aiohttp does
~9,000 and ``wrk`` (C, one thread) more. Every loop here is bounded in requests and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.report import pct

LUA = Path(__file__).resolve().parent / "post.lua"

# (status, body) -> an error kind, or None when the answer is what the phase expects
Check = Callable[[int, bytes], str | None]


def expect(status: int = 200, contains: bytes | None = None) -> Check:
    def check(got: int, body: bytes) -> str | None:
        if got != status:
            return f"http_{got}"
        if contains is not None and contains not in body:
            return "bad_body"
        return None

    return check


def install_uvloop() -> bool:
    """Run the client on uvloop when it is installed (it is optional)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@dataclass
class Target:
    """What one request is: ``POST url`` with ``body`` and ``headers``; ``check`` judges
    the answer; ``on_ok`` (optional) gets the body of every good answer."""

    url: str
    body: bytes
    headers: dict[str, str]
    check: Check
    timeout: float = 120.0
    on_ok: Callable[[bytes], None] | None = None


def _timeout(total: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=total)


async def _one(session: Any, t: Target) -> tuple[float, str | None]:
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.post(t.url, data=t.body, headers=t.headers,
                                timeout=_timeout(t.timeout)) as resp:
            body = await resp.read()
            err = t.check(resp.status, body)
            if err is None and t.on_ok is not None:
                t.on_ok(body)
            return time.perf_counter() - t0, err
    except TimeoutError:
        return time.perf_counter() - t0, "timeout"
    except aiohttp.ClientError as exc:
        return time.perf_counter() - t0, type(exc).__name__
    except OSError as exc:
        return time.perf_counter() - t0, f"OSError_{exc.errno}"


def _summary(lat: list[float], errors: Counter[str], wall: float) -> dict[str, Any]:
    lat.sort()
    return {
        "ok": len(lat),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "wall_s": round(wall, 3),
        "rps": round(len(lat) / wall, 1) if wall > 0 else None,
        "p50_ms": round(pct(lat, 50) * 1000, 2),
        "p90_ms": round(pct(lat, 90) * 1000, 2),
        "p99_ms": round(pct(lat, 99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
    }


async def closed_loop(t: Target, *, concurrency: int, duration: float,
                      warmup_s: float = 1.0, max_requests: int = 1_000_000) -> dict[str, Any]:
    """``concurrency`` workers on keep-alive connections, each sending its next request as
    soon as the previous one returns, for ``duration`` s (after ``warmup_s`` not counted)
    and at most ``max_requests``."""
    import aiohttp

    lat: list[float] = []
    errors: Counter[str] = Counter()
    budget = [max_requests]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker(until: float, record: bool) -> None:
            while time.perf_counter() < until and budget[0] > 0:
                budget[0] -= record
                dt, err = await _one(session, t)
                if not record:
                    continue
                if err:
                    errors[err] += 1
                else:
                    lat.append(dt)

        if warmup_s > 0:
            until = time.perf_counter() + warmup_s
            await asyncio.gather(*(worker(until, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + duration, True) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"client": "aiohttp", "mode": "closed", "concurrency": concurrency,
            **_summary(lat, errors, wall)}


async def burst(t: Target, *, n: int, connections: int = 0) -> dict[str, Any]:
    """``n`` requests started at once; at most ``connections`` open (0: one per request).
    ``wall_s`` runs from the first request to the last answer."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections or 0, force_close=not connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one(session, t) for _ in range(n)))
        wall = time.perf_counter() - start
    lat = [dt for dt, err in results if err is None]
    errors = Counter(err for _, err in results if err is not None)
    out = {"client": "aiohttp", "mode": "burst", "n": n, "connections": connections or n,
           **_summary(lat, errors, wall)}
    out["rps"] = round(n / wall, 1) if wall > 0 else None  # answers of any kind per second
    return out


# --- wrk ------------------------------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_SUMMARY = re.compile(r"SUMMARY (.*)")


def wrk_closed_loop(t: Target, *, concurrency: int, duration: float, warmup_s: float = 1.0,
                    expect_status: int = 200, threads: int = 1) -> dict[str, Any]:
    """The same closed loop with ``wrk`` (HTTP/1.1 keep-alive, ``threads`` threads). It
    checks the status only (``expect_status``), not the body."""
    env = {**os.environ, "BENCH_BODY": t.body.decode(), "BENCH_EXPECT": str(expect_status)}
    headers = [a for k, v in t.headers.items() if k.lower() != "content-type"
               for a in ("-H", f"{k}: {v}")]
    base = ["wrk", "-t", str(threads), "-c", str(concurrency), "-s", str(LUA),
            "--timeout", f"{int(t.timeout)}s", *headers]
    if warmup_s > 0:
        subprocess.run([*base, "-d", f"{max(1, round(warmup_s))}s", t.url], env=env,
                       capture_output=True, timeout=warmup_s + t.timeout + 30)
    proc = subprocess.run([*base, "-d", f"{max(1, round(duration))}s", "--latency", t.url],
                          env=env, capture_output=True, text=True,
                          timeout=duration + t.timeout + 30)
    m = _SUMMARY.search(proc.stdout)
    if not m:
        raise RuntimeError(f"wrk printed no SUMMARY: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    f = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    wall = f["duration_us"] / 1e6
    errors = {k: f[k] for k in ("errors_connect", "errors_read", "errors_write",
                                "errors_timeout") if f[k]}
    if f["bad_status"]:
        errors["bad_status"] = f["bad_status"]
    ok = f["requests"] - f["bad_status"]
    return {"client": "wrk", "mode": "closed", "concurrency": concurrency, "ok": ok,
            "failed": sum(errors.values()), "errors": errors, "wall_s": round(wall, 3),
            "rps": round(ok / wall, 1), "p50_ms": f["p50_us"] / 1000,
            "p90_ms": f["p90_us"] / 1000, "p99_ms": f["p99_us"] / 1000,
            "max_ms": f["max_us"] / 1000}


def run_closed(t: Target, *, concurrency: int, duration: float, client: str = "auto",
               warmup_s: float = 1.0, expect_status: int = 200) -> dict[str, Any]:
    """Closed loop with ``wrk`` when installed (``client="auto"``), else aiohttp."""
    if client == "wrk" or (client == "auto" and have_wrk()):
        return wrk_closed_loop(t, concurrency=concurrency, duration=duration,
                               warmup_s=warmup_s, expect_status=expect_status)
    install_uvloop()
    return asyncio.run(closed_loop(t, concurrency=concurrency, duration=duration,
                                   warmup_s=warmup_s))


def json_body(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Ad-hoc load against any URL: ``PYTHONPATH=bench .venv/bin/python -m benchlib.load
    closed --url URL -c 16 -d 10 --watch-pid PID`` (or ``burst -n 2000``). Prints one JSON
    line with, given ``--watch-pid``, the server tree's CPU per request and peak RSS."""
    import argparse

    from benchlib.proc import CpuMeter, PeakRss

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("mode", choices=("closed", "burst"))
    p.add_argument("--url", required=True)
    p.add_argument("--body", default='{"model":"gpt-image-1","prompt":"a red fox","n":1}')
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--status", type=int, default=200, help="the expected status")
    p.add_argument("-c", "--concurrency", type=int, default=16, help="closed loop")
    p.add_argument("-d", "--duration", type=float, default=10.0, help="closed loop, s")
    p.add_argument("--client", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("-n", type=int, default=2000, help="burst size")
    p.add_argument("--connections", type=int, default=0, help="burst cap (0: one each)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--watch-pid", type=int, default=0)
    a = p.parse_args(argv)
    headers = {"content-type": "application/json"}
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    t = Target(a.url, a.body.encode(), headers, expect(a.status), timeout=a.timeout)
    pids = [a.watch_pid] if a.watch_pid else []
    if a.mode == "closed":  # 1 s warm-up, outside the CPU window
        run_closed(t, concurrency=a.concurrency, duration=1, client=a.client, warmup_s=0,
                   expect_status=a.status)
    with PeakRss(pids) as rss, CpuMeter(a.watch_pid or os.getpid()) as cpu:
        if a.mode == "closed":
            res = run_closed(t, concurrency=a.concurrency, duration=a.duration,
                             client=a.client, warmup_s=0, expect_status=a.status)
        else:
            install_uvloop()
            res = asyncio.run(burst(t, n=a.n, connections=a.connections))
    if a.watch_pid:
        res.update(server_cpu_ms_per_req=round(cpu.per_request_ms(res["ok"]), 3),
                   rss_start_mb=round(rss.start_mb, 1), rss_peak_mb=round(rss.peak_mb, 1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
