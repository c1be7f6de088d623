#!/usr/bin/env python3
"""A/B of ``pixelgate serve``'s start: two trees' single starts, alternately.

A start is ~1 s of CPU, and on a shared machine two runs of one tree differ by more than
a change of a few percent does; the figure that survives is the process's own CPU to its
first healthy answer, from starts interleaved base/other/other/base. Each start is
``python -m pixelgate serve`` with ``bench_peers.py``'s environment and config (one fake
OpenAI upstream); ``GET /health`` is polled every ``--poll-ms``; at its first 200 the
process's CPU (``/proc/<pid>/task/*/schedstat``) and the wall time since the spawn are
read, then the idle RSS ``--rss-after`` s later. By default each side restarts on its own
data dir, created by one untimed warm-up start (which also compiles an exported tree's
bytecode); ``--fresh`` gives every start a new data dir (migrations included).

    .venv/bin/python bench/bench_start.py --base 4d674be                 # ~2 min
    .venv/bin/python bench/bench_start.py --base HEAD~2 --rounds 16 --fresh
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ab, report, servers
from benchlib.proc import cpu_s, tree_rss_kb
from benchlib.servers import Servers


def one_start(
    work: Path, name: str, config: Path, pythonpath: str, data: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Start ``serve``, poll ``/health`` to its first 200; CPU, wall and idle RSS."""
    gw = servers.gateway(
        work, name, config, pythonpath=pythonpath, extra={"PIXELGATE_DATA_DIR": data}
    )
    with Servers() as one:
        one.add(gw)
        deadline = time.monotonic() + 90
        while servers.http_status(gw.url + "/health", timeout=5) != 200:
            if gw.proc is not None and gw.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{gw.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy in 90 s:\n{gw.log_tail()}")
            time.sleep(args.poll_ms / 1000)
        cpu, wall = cpu_s(gw.pid), time.monotonic() - gw.started_at
        time.sleep(args.rss_after)
        rss = tree_rss_kb(gw.pid) / 1024
    return {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4), "rss_mb": round(rss, 1)}


def data_dir(work: Path, side: str, index: int, fresh: bool) -> str:
    path = work / (f"{side}-data-{index}" if fresh else f"{side}-data")
    path.mkdir(exist_ok=True)
    return str(path)


def run(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    with Servers() as started:
        fake = started.add(servers.app_server(work, "fake-openai", "fake_openai.py"))
        fake.wait_ready("/health", 30)
        config = servers.gateway_config(work, upstream=fake.url, default="openai")
        trees = ab.trees(args, work)
        for side, pythonpath in trees.items():  # warm-up: bytecode, the restart data dir
            one_start(
                work, f"{side}-warmup", config, pythonpath, data_dir(work, side, 0, False), args
            )
        for round_ in range(1, args.rounds + 1):
            order = ("base", "other") if round_ % 2 else ("other", "base")
            for side in order:
                res = one_start(
                    work,
                    f"{side}-{round_}",
                    config,
                    trees[side],
                    data_dir(work, side, round_, args.fresh),
                    args,
                )
                results["runs"].append({"round": round_, "side": side, **res})
                print(
                    f"... round {round_} {side}: CPU {res['cpu_s']:.3f} s, wall "
                    f"{res['wall_s']:.3f} s, RSS {res['rss_mb']} MB",
                    file=sys.stderr,
                )
    results["summary"] = summary(results["runs"])


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure: each side's median and best, and the change of the medians."""
    rows = []
    for key, best in (("cpu_s", min), ("wall_s", min), ("rss_mb", min)):
        row: dict[str, Any] = {"figure": key}
        for side in ("base", "other"):
            values = [r[key] for r in runs if r["side"] == side]
            row[side] = {
                "median": round(statistics.median(values), 3),
                "best": best(values),
                "n": len(values),
            }
        row["change"] = round(row["other"]["median"] / row["base"]["median"] - 1, 3)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], base: str, other: str) -> str:
    out = [
        f"| figure | {base}: median (best) | {other} | change of the medians |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        b, o = r["base"], r["other"]
        out.append(
            f"| {r['figure']} ({b['n']} each) | {b['median']} ({b['best']}) | "
            f"{o['median']} ({o['best']}) | {r['change']:+.1%} |"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ab.add_tree_options(p, rounds=12)
    p.add_argument("--fresh", action="store_true", help="a new data dir for every start")
    p.add_argument("--poll-ms", type=float, default=5.0, help="/health polling interval")
    p.add_argument(
        "--rss-after", type=float, default=1.0, help="seconds after healthy to read the idle RSS"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = report.header("bench_start")
    results["config"] = vars(args)
    results["runs"] = []
    with report.guarded_run(results, "pixelgate-bench-start-", args.keep) as work:
        run(args, work, results)
    return ab.finish("bench_start", results, args, table)


if __name__ == "__main__":
    sys.exit(main())
