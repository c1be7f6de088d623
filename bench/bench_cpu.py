"""CPU per request of two trees, in process, alternately: the A/B that a busy machine
does not spoil.

Wall-clock rates on a shared 2-core machine move by ±40 % with the other tenants'
load, and so does a server's CPU per request when its threads wait for a core. This
script keeps the measurement in one process: the gateway's ASGI app (with its worker,
its DB thread and CPU pool, exactly as ``pixelgate serve`` runs them) is called by an
ASGI driver in the same event loop (no HTTP client, no sockets), K requests in flight,
and the process's CPU time (all its threads) is divided by the requests answered. The
trees run alternately, round after round, each in a fresh process and data directory.

    .venv/bin/python bench/bench_cpu.py --base ff5fb26                 # against the working tree
    .venv/bin/python bench/bench_cpu.py --base ff5fb26 --other HEAD --rounds 6
    .venv/bin/python bench/bench_cpu.py --base HEAD~1 --routes native:1,native:64,openai:16
    .venv/bin/python bench/bench_cpu.py --base ff5fb26 --instructions --duration 30 --rounds 1

With ``--instructions`` each tree runs under valgrind's callgrind, which counts the
instructions of the measured phase (all threads): a count that does not move with the
machine's load (the same total twice, one run with the other core busy), at ~50x the
run time. It leaves out the kernel and the time spent waiting, so it complements the CPU
time rather than replacing it.

The OpenAI route calls a fake OpenAI upstream (``benchlib/apps/fake_openai.py``) over
loopback: its CPU is not counted. Writes ``bench/results/bench_cpu-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ab, report, servers
from benchlib.servers import ADMIN_KEY, Servers

#: run in a fresh process per tree and round: PYTHONPATH selects the tree
DRIVER = r"""
import asyncio, json, os, sys, time
from pixelgate.config import load_settings
from pixelgate.logs import configure_logging
from pixelgate.runtime import Runtime
from pixelgate.api.app import create_app

ROUTES = {
    "native": ("/v1/generations", {"prompt": "a red fox", "provider": "fast", "width": 64,
                                   "height": 64, "format": "png"},
               [(b"prefer", b"wait=30")], b'"SUCCEEDED"'),
    "openai": ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a red fox",
                                          "n": 1, "size": "1024x1024"}, [], b'"data"'),
}

async def call(app, path, body, extra):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000), "state": {},
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"authorization", b"Bearer " + os.environ["KEY"].encode()),
                         (b"content-length", str(len(body)).encode()), *extra]}
    sent = False
    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
    status, chunks = 0, []
    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))
    await app(scope, receive, send)
    return status, b"".join(chunks)

async def loop_(app, route, concurrency, duration):
    path, payload, extra, marker = ROUTES[route]
    body = json.dumps(payload).encode()
    done, failed, first_failure = 0, 0, None
    until = time.monotonic() + duration
    async def one_connection():
        nonlocal done, failed, first_failure
        while time.monotonic() < until:
            status, answer = await call(app, path, body, extra)
            if status == 200 and marker in answer:
                done += 1
            else:
                failed += 1
                first_failure = first_failure or f"{status} {answer[:300]!r}"
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return done, failed, first_failure

def instrument(state):
    import subprocess
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True,
                   capture_output=True)

async def main():
    cfg = json.loads(sys.argv[1])
    providers = {"fast": {"kind": "placeholder"}}
    if cfg["upstream"]:
        providers["openai"] = {"kind": "openai", "base_url": cfg["upstream"] + "/v1",
                               "api_key": "sk-bench", "timeout_s": 600}
    settings = load_settings(data_dir=cfg["data"], admin_key=os.environ["KEY"],
                             providers=providers, routing={"default": ["fast"]},
                             log_level="warning")
    # as `pixelgate serve` does: unconfigured, structlog would print every debug line
    configure_logging(settings.log_level, "json")
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    try:
        app = create_app(settings, runtime=runtime, run_worker=False)
        # as `pixelgate serve` does once it has started: start-up's objects frozen, the
        # young generation collected every 10,000 allocations instead of 700
        try:
            from pixelgate.gc_tuning import tune_for_server
        except ImportError:  # a tree from before it
            import gc
            gc.freeze()
        else:
            tune_for_server()
        out = {}
        for route, concurrency in cfg["routes"]:
            await loop_(app, route, concurrency, cfg["warmup"])
            if cfg["instructions"]:
                instrument("on")
            t0 = time.process_time()
            done, failed, first_failure = await loop_(app, route, concurrency, cfg["duration"])
            cpu = time.process_time() - t0
            if cfg["instructions"]:
                instrument("off")
            out[f"{route} c={concurrency}"] = {
                "ok": done, "failed": failed, "first_failure": first_failure,
                "cpu_ms_per_req": round(1000 * cpu / max(done, 1), 3)}
        print("BENCH_CPU " + json.dumps(out), flush=True)
    finally:
        await runtime.close()

import uvloop
uvloop.run(main())
"""


def run_tree(src: str, work: Path, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    data = work / f"{name}-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    env.update({"PYTHONPATH": src, "KEY": ADMIN_KEY})
    argv = [sys.executable, "-c", DRIVER, json.dumps({**cfg, "data": str(data)})]
    counts = work / f"{name}.callgrind"
    if cfg["instructions"]:
        # instructions of the measured phase only (the driver switches them on and off)
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={counts}", *argv]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: the driver failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_CPU "))
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_CPU "))
    if cfg["instructions"]:
        [route] = result  # one route per valgrind run: the totals are the process's
        found = re.search(r"^totals: (\d+)", counts.read_text(), re.MULTILINE)
        assert found is not None, f"{name}: no totals in {counts}"
        result[route]["instructions_m_per_req"] = round(
            int(found[1]) / max(result[route]["ok"], 1) / 1e6, 3
        )
    return result


def summary(runs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys(r["route"] for r in runs):
        row: dict[str, Any] = {"route": key, "metric": metric}
        # a run with failed requests measured something else (an open breaker's refusals)
        row["failed_runs"] = sum(1 for r in runs if r["route"] == key and r["failed"])
        for side in ("base", "other"):
            cpu = [r[metric] for r in runs
                   if r["route"] == key and r["side"] == side and not r["failed"]]
            if not cpu:
                cpu = [math.nan]
            row[side] = {"median": round(statistics.median(cpu), 3), "min": min(cpu),
                         "max": max(cpu)}
        row["change"] = round(row["other"]["median"] / row["base"]["median"] - 1, 3)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], base: str, other: str) -> str:
    unit = {"cpu_ms_per_req": "ms", "instructions_m_per_req": "M instructions"}
    what = {"cpu_ms_per_req": "CPU/req", "instructions_m_per_req": "instructions/req"}
    metric = rows[0]["metric"] if rows else "cpu_ms_per_req"
    out = [f"| route | {base}: {what[metric]} median (min-max) | {other} | change |",
           "| --- | --- | --- | --- |"]
    for r in rows:
        b, o, u = r["base"], r["other"], unit[metric]
        note = f" ({r['failed_runs']} run(s) with failures left out)" if r["failed_runs"] else ""
        out.append(f"| {r['route']}{note} | {b['median']} {u} ({b['min']}-{b['max']}) "
                   f"| {o['median']} {u} ({o['min']}-{o['max']}) | {r['change']:+.0%} |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ab.add_tree_options(p)
    p.add_argument("--routes", default="native:1,native:64,openai:16",
                   help="ROUTE:IN_FLIGHT,... (routes: native, openai)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per route")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--instructions", action="store_true",
                   help="count instructions under valgrind's callgrind instead of CPU time "
                        "(repeatable whatever the machine's load; ~50x slower: use "
                        "--duration 30 --rounds 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = report.header("bench_cpu")
    results["config"] = vars(args)
    results["runs"] = []
    routes = ab.parse_routes(args.routes)
    with report.guarded_run(results, "pixelgate-bench-cpu-", args.keep) as work:
        trees = ab.trees(args, work)
        with Servers() as started:
            upstream = None
            if any(name == "openai" for name, _ in routes):
                fake = started.add(servers.app_server(work, "fake-openai", "fake_openai.py"))
                fake.wait_ready("/health", 30)
                upstream = fake.url
            # under valgrind, one route per process (its totals are the process's)
            groups = [[r] for r in routes] if args.instructions else [routes]
            for round_ in range(1, args.rounds + 1):
                for side, src in trees.items():
                    found: dict[str, Any] = {}
                    for index, group in enumerate(groups):
                        cfg = {"routes": group, "upstream": upstream,
                               "duration": args.duration, "warmup": args.warmup,
                               "instructions": args.instructions}
                        found |= run_tree(src, work, f"{side}-{round_}-{index}", cfg)
                    for route, figures in found.items():
                        results["runs"].append({"round": round_, "side": side,
                                                "route": route, **figures})
                        print(f"... round {round_} {side} {route}: {figures}", file=sys.stderr)
                    time.sleep(1)
        metric = "instructions_m_per_req" if args.instructions else "cpu_ms_per_req"
        results["summary"] = summary(results["runs"], metric)
    return ab.finish("bench_cpu", results, args, table)


if __name__ == "__main__":
    sys.exit(main())
