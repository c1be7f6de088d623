#!/usr/bin/env python3
"""A/B of two pixelgate trees on the hot routes, alternately, round after round.

One machine's speed moves by tens of percent from one quarter of an hour to the next;
two trees compared in two separate runs measure the machine as much as the code. This
script alternates them: each round starts ``--base`` (a committed tree, ``git archive``)
and then the working tree (or ``--other``), each ``pixelgate serve`` on a fresh data dir
behind one fake OpenAI upstream (0 ms), warms each route up, then measures it for
``--duration`` s with a closed loop (``wrk`` when installed): server CPU per request from
``/proc`` (the figure that survives a busy machine) and requests/s. The summary gives the
median and best of the rounds for each side, and the change.

Nothing is deleted before the end: a tree of thousands of just-deleted files makes the
next server's file creation pay ext4's inode allocator (``docs/benchmarks.md``).

    .venv/bin/python bench/bench_ab.py --base 41e5989                   # ~4 min
    .venv/bin/python bench/bench_ab.py --base HEAD~3 --routes native:64 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_peers import NATIVE_BODY, OPENAI_BODY, OPENAI_ROUTE, headers_for
from benchlib import ab, load, report, servers
from benchlib.proc import CpuMeter
from benchlib.servers import Server, Servers

ROUTES = {
    "native": ("/v1/generations", NATIVE_BODY, {"prefer": "wait=30"}, b'"SUCCEEDED"'),
    "openai": (OPENAI_ROUTE, OPENAI_BODY, {}, b'"data"'),
}


def measure(gw: Server, route: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    path, body, extra, marker = ROUTES[route]
    target = load.Target(gw.url + path, body, {**headers_for("pixelgate"), **extra},
                         load.expect(200, marker), timeout=60)
    load.run_closed(target, concurrency=concurrency, duration=args.warmup, warmup_s=0)
    with CpuMeter(gw.pid) as cpu:
        res = load.run_closed(target, concurrency=concurrency, duration=args.duration,
                              warmup_s=0)
    return {"ok": res["ok"], "failed": res["failed"], "rps": res["rps"],
            "p50_ms": res["p50_ms"], "cpu_ms_per_req": round(cpu.per_request_ms(res["ok"]), 3),
            "other_cores": round(cpu.other_cores, 2)}


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys(r["route"] for r in runs):
        row: dict[str, Any] = {"route": key}
        for side in ("base", "other"):
            mine = [r for r in runs if r["route"] == key and r["side"] == side]
            cpu = [r["cpu_ms_per_req"] for r in mine]
            rps = [r["rps"] for r in mine]
            row[side] = {"cpu_median": round(statistics.median(cpu), 3), "cpu_min": min(cpu),
                         "rps_median": round(statistics.median(rps), 1), "rps_max": max(rps)}
        row["cpu_change"] = round(row["other"]["cpu_median"] / row["base"]["cpu_median"] - 1, 3)
        row["rps_change"] = round(row["other"]["rps_median"] / row["base"]["rps_median"] - 1, 3)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], base: str, other: str) -> str:
    out = [f"| route | {base}: CPU/req median (best), req/s | {other} | change (CPU, req/s) |",
           "| --- | --- | --- | --- |"]
    for r in rows:
        b, o = r["base"], r["other"]
        out.append(f"| {r['route']} | {b['cpu_median']} ms ({b['cpu_min']}), {b['rps_median']:.0f}"
                   f" | {o['cpu_median']} ms ({o['cpu_min']}), {o['rps_median']:.0f}"
                   f" | {r['cpu_change']:+.0%}, {r['rps_change']:+.0%} |")
    return "\n".join(out)


def run(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    routes = ab.parse_routes(args.routes)
    with Servers() as started:
        fake = started.add(servers.app_server(work, "fake-openai", "fake_openai.py"))
        fake.wait_ready("/health", 30)
        config = servers.gateway_config(work, upstream=fake.url)
        for round_ in range(1, args.rounds + 1):
            for side, pythonpath in ab.trees(args, work).items():
                with Servers() as one:
                    gw = one.add(servers.gateway(work, f"{side}-{round_}", config,
                                                 pythonpath=pythonpath))
                    gw.wait_ready("/health", 90)
                    time.sleep(0.5)
                    for route, concurrency in routes:
                        res = measure(gw, route, concurrency, args)
                        results["runs"].append({"round": round_, "side": side,
                                                "route": f"{route} c={concurrency}", **res})
                        print(f"... round {round_} {side} {route} c={concurrency}: "
                              f"{res['rps']:.0f} req/s, {res['cpu_ms_per_req']} ms CPU/req",
                              file=sys.stderr)
    results["summary"] = summary(results["runs"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ab.add_tree_options(p)
    p.add_argument("--routes", default="native:64,openai:16", help="ROUTE:CONNECTIONS,...")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per route")
    p.add_argument("--warmup", type=float, default=2.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load.install_uvloop()
    results: dict[str, Any] = report.header("bench_ab")
    results["config"] = vars(args)
    results["runs"] = []
    with report.guarded_run(results, "pixelgate-bench-ab-", args.keep) as work:
        run(args, work, results)
    return ab.finish("bench_ab", results, args, table)


if __name__ == "__main__":
    sys.exit(main())
