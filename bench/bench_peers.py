#!/usr/bin/env python3
"""pixelgate side by side with the LiteLLM proxy and a bare proxy, on ONE fake upstream.

One fake OpenAI images API (``benchlib/apps/fake_openai.py``, 64x64 PNG, 0 ms) behind:

- **pixelgate**: ``python -m pixelgate serve`` from this checkout's venv (embedded:
  SQLite, in-process worker), its ``openai`` instance pointed at the fake;
- **LiteLLM**: the LiteLLM proxy, 1 worker, master key, no database, from its own venv
  ``bench/.venv-litellm`` (``bench/requirements-litellm.txt``, installed on first use;
  skipped with a message when it cannot be installed, or with ``--no-litellm``);
- **bare**: ``benchlib/apps/min_proxy.py``, a minimal forwarding hop (Starlette + pooled
  aiohttp): the ceiling for a Python gateway.

For each concurrency (1, 16, 64) and each target: a closed loop of ``--duration`` s on
``POST /v1/images/generations`` (``wrk`` when installed, else aiohttp) after a 1 s
warm-up; requests/s, p50/p99, errors, and **server CPU per request**: utime+stime of the
server's process tree (children included) from ``/proc`` before and after, divided by the
requests answered. Ratios are taken within this one run: the figure that survives a busy
machine is CPU per request.

Also: pixelgate's native ``POST /v1/generations`` with ``Prefer: wait=30`` on the 0 ms
placeholder (64x64 PNG) at c=1 and c=64; the idle RSS and start-to-healthy time of
``pixelgate serve`` (first start on a fresh data dir, and restarts) and of LiteLLM.

Writes ``bench/results/bench_peers-<UTC>.json``, a plot of requests/s, p50 and CPU per
request against concurrency (``--plot``, default ``bench/results/peers.png``), prints
markdown tables; ``--flame out.svg`` records a py-spy flame graph of pixelgate during an
extra c=16 run.

    .venv/bin/python bench/bench_peers.py                       # ~3 min
    .venv/bin/python bench/bench_peers.py --duration 5 --flame bench/results/flame.svg
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import load, report, servers
from benchlib.proc import CpuMeter, tree_rss_kb
from benchlib.servers import ADMIN_KEY, BENCH_DIR, LITELLM_KEY, Server, Servers

OPENAI_ROUTE = "/v1/images/generations"
OPENAI_BODY = load.json_body({"model": "gpt-image-1", "prompt": "a red fox", "n": 1,
                              "size": "1024x1024"})
NATIVE_BODY = load.json_body({"prompt": "a red fox", "provider": "fast", "width": 64,
                              "height": 64, "format": "png"})
TARGETS = ("pixelgate", "litellm", "bare")

# issue 13, "What to reach"
TARGET_CPU_RATIO = 1 / 6
TARGET_NATIVE_P50_MS, TARGET_NATIVE_RPS = 2.0, 1000.0
TARGET_IDLE_MB, TARGET_READY_S = 100.0, 1.0


# --- measurement ------------------------------------------------------------------------


def headers_for(name: str) -> dict[str, str]:
    key = {"pixelgate": ADMIN_KEY, "litellm": LITELLM_KEY, "bare": "sk-none"}[name]
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def measure(server: Server, target: load.Target, *, concurrency: int,
            args: argparse.Namespace, expect_status: int = 200) -> dict[str, Any]:
    """One closed-loop phase with the server's CPU over exactly the measured part."""
    if args.warmup > 0:  # warm-up outside the CPU window
        load.run_closed(target, concurrency=concurrency, duration=args.warmup,
                        client=args.client, warmup_s=0, expect_status=expect_status)
    with CpuMeter(server.pid) as cpu:
        res = load.run_closed(target, concurrency=concurrency, duration=args.duration,
                              client=args.client, warmup_s=0, expect_status=expect_status)
    res["server_cpu_s"] = round(cpu.seconds, 3)
    res["server_cpu_ms_per_req"] = round(cpu.per_request_ms(res["ok"]), 3)
    res["server_cpu_cores"] = round(cpu.seconds / cpu.wall_s, 2) if cpu.wall_s else None
    res["other_cores"] = round(cpu.other_cores, 2)
    return res


def startup(work: Path, config: Path, runs: int, pythonpath: str | None) -> dict[str, Any]:
    """``pixelgate serve`` start to healthy: first start on a fresh data dir (migrations
    included), then ``runs - 1`` restarts on the same data dir; idle RSS 1 s after."""
    times: list[float] = []
    idle: list[float] = []
    for i in range(max(1, runs)):
        with Servers() as started:
            gw = started.add(servers.gateway(work, "gateway-startup", config,
                                             pythonpath=pythonpath))
            times.append(gw.wait_ready("/health", 90, ok_below=300))
            time.sleep(1.0)
            idle.append(tree_rss_kb(gw.pid) / 1024)
        print(f"... pixelgate start {i + 1}: healthy after {times[-1]:.2f} s", file=sys.stderr)
    restarts = times[1:]
    return {"fresh_s": round(times[0], 3),
            "restart_s": round(statistics.median(restarts), 3) if restarts else None,
            "all_s": [round(t, 3) for t in times],
            "idle_rss_mb": round(statistics.median(idle), 1)}


def any_failed(base: str) -> bool:
    req = urllib.request.Request(base + "/v1/generations?status=FAILED&limit=1",
                                 headers=headers_for("pixelgate"))
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bool(json.loads(resp.read())["data"])


def flame(gw: Server, target: load.Target, args: argparse.Namespace) -> dict[str, Any]:
    """py-spy flame graph of pixelgate while a c=16 closed loop runs."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"error": "py-spy not found (pip install py-spy, see bench/README.md)"}
    out = Path(args.flame).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    secs = max(2, round(args.flame_seconds))
    spy = subprocess.Popen([pyspy, "record", "-f", "flamegraph", "-o", str(out), "-r", "200",
                            "-d", str(secs), "-p", str(gw.pid)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # py-spy attaches
    res = load.run_closed(target, concurrency=16, duration=secs, client=args.client,
                          warmup_s=0)
    try:
        log = spy.communicate(timeout=secs + 60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        spy.kill()
        log = "py-spy did not finish"
    ok = spy.returncode == 0 and out.exists()
    return {"svg": str(out) if ok else None, "rps_under_py_spy": res["rps"],
            "py_spy": log.strip().splitlines()[-3:], "error": None if ok else "py-spy failed"}


# --- report -----------------------------------------------------------------------------


def ratios(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pixelgate ÷ each peer per concurrency. With several rounds (``--rounds``) each
    round's ratio pairs rows measured minutes apart at most, and the row says their
    median (and, for CPU per request, every round's value)."""
    by = {(p["target"], p["concurrency"], p.get("round", 1)): p for p in phases}
    out = []
    for c in sorted({p["concurrency"] for p in phases}):
        row: dict[str, Any] = {"concurrency": c}
        for peer in ("litellm", "bare"):
            per_round: dict[str, list[float]] = {"cpu_per_req": [], "rps": [], "p50": []}
            for rnd in sorted({p.get("round", 1) for p in phases}):
                pg, other = by.get(("pixelgate", c, rnd)), by.get((peer, c, rnd))
                if not (pg and other and pg["ok"] and other["ok"]):
                    continue
                per_round["cpu_per_req"].append(
                    pg["server_cpu_ms_per_req"] / other["server_cpu_ms_per_req"])
                per_round["rps"].append(pg["rps"] / other["rps"])
                per_round["p50"].append(pg["p50_ms"] / other["p50_ms"])
            if not per_round["cpu_per_req"]:
                continue
            for what, values in per_round.items():
                row[f"{what}_vs_{peer}"] = round(statistics.median(values), 3)
            if len(per_round["cpu_per_req"]) > 1:
                row[f"cpu_per_req_vs_{peer}_rounds"] = [
                    round(v, 3) for v in per_round["cpu_per_req"]]
        if len(row) > 1:
            out.append(row)
    return out


def tables(r: dict[str, Any]) -> str:
    x = "x"
    out = []
    rounds = max((p.get("round", 1) for p in r["phases"]), default=1)
    rows = [[p["concurrency"], f"{p['target']} (round {p.get('round', 1)})" if rounds > 1
             else p["target"], report.fmt(p["rps"], ".0f"),
             report.fmt(p["p50_ms"]), report.fmt(p["p99_ms"]),
             report.fmt(p["server_cpu_ms_per_req"]), report.fmt(p.get("other_cores")),
             json.dumps(p["errors"]) if p["errors"] else "0"] for p in r["phases"]]
    out += [f"OpenAI route `POST {OPENAI_ROUTE}`, one fake upstream (0 ms), closed loop "
            f"{r['config']['duration']:g} s per row ({r['phases'][0]['client'] if rows else ''})",
            "", report.markdown(rows, ["c", "target", "req/s", "p50 ms", "p99 ms",
                                       "server CPU ms/req", "other cores busy", "errors"]),
            "", "(other cores busy: the machine's CPU use besides the server during the row,"
            " the load client included, out of "
            f"{r['machine']['nproc']}; more than ~1 means a noisy row)", ""]
    rat = r.get("ratios", [])
    if rat:
        def g(row: dict[str, Any], k: str) -> str:
            return report.fmt(row.get(k), ".2f") + x if k in row else "-"

        def each(row: dict[str, Any]) -> str:
            values = row.get("cpu_per_req_vs_litellm_rounds")
            return ", ".join(f"{v:.2f}" for v in values) if values else "-"

        rows = [[q["concurrency"], g(q, "cpu_per_req_vs_litellm"), each(q),
                 g(q, "cpu_per_req_vs_bare"), g(q, "rps_vs_litellm"), g(q, "rps_vs_bare"),
                 g(q, "p50_vs_litellm")] for q in rat]
        how = f"median of {rounds} rounds, " if rounds > 1 else ""
        out += [f"Ratios (pixelgate ÷ peer, same run, {how}target for CPU/req vs LiteLLM at "
                f"c=16: ≤ {TARGET_CPU_RATIO:.2f}{x})", "",
                report.markdown(rows, ["c", "CPU/req ÷ LiteLLM", "each round",
                                       "CPU/req ÷ bare", "req/s ÷ LiteLLM", "req/s ÷ bare",
                                       "p50 ÷ LiteLLM"]), ""]
    nat = r.get("native", [])
    if nat:
        rows = [[p["concurrency"], report.fmt(p["rps"], ".0f"), report.fmt(p["p50_ms"]),
                 report.fmt(p["p99_ms"]), report.fmt(p["server_cpu_ms_per_req"]),
                 report.fmt(p.get("other_cores")), (json.dumps(p["errors"]) if p["errors"] else "0")
                 + (" (some FAILED)" if p.get("some_failed") else "")] for p in nat]
        out += ["Native `POST /v1/generations` + `Prefer: wait=30`, placeholder 0 ms, 64x64 PNG "
                f"(targets: c=1 p50 ≤ {TARGET_NATIVE_P50_MS:g} ms, c=64 ≥ "
                f"{TARGET_NATIVE_RPS:,.0f} req/s)", "",
                report.markdown(rows, ["c", "req/s", "p50 ms", "p99 ms", "server CPU ms/req",
                                       "other cores busy", "errors"]), ""]
    st = r.get("startup", {})
    if st:
        rows = [["pixelgate serve", report.fmt(st.get("fresh_s")), report.fmt(st.get("restart_s")),
                 report.fmt(st.get("idle_rss_mb"), ".0f"),
                 f"≤ {TARGET_READY_S:g} s, ≤ {TARGET_IDLE_MB:.0f} MB"]]
        lite = r.get("servers", {}).get("litellm")
        if lite:
            rows.append(["LiteLLM proxy", report.fmt(lite.get("ready_s")), "-",
                         report.fmt(lite.get("idle_rss_mb"), ".0f"), ""])
        out += ["Start to healthy and idle RSS (process tree)", "",
                report.markdown(rows, ["server", "start to healthy, fresh s", "restart s",
                                       "idle RSS MB", "target"]), ""]
    return "\n".join(out)


def _median_rows(phases: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """One row per concurrency: the round with the median server CPU per request."""
    out = []
    for c in sorted({p["concurrency"] for p in phases}):
        rows = sorted((p for p in phases if p["concurrency"] == c),
                      key=lambda p: p["server_cpu_ms_per_req"])
        out.append((c, rows[(len(rows) - 1) // 2]))
    return out


def plot(r: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')",
              file=sys.stderr)
        return None
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    labels = {"pixelgate": "pixelgate", "litellm": "LiteLLM proxy (1 worker)",
              "bare": "bare forwarding proxy"}
    for name in TARGETS:
        pts = _median_rows([p for p in r["phases"] if p["target"] == name])
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax1.plot(xs, [p["rps"] for _, p in pts], marker="o", label=labels[name])
        ax2.plot(xs, [p["p50_ms"] for _, p in pts], marker="o", label=labels[name])
        ax3.plot(xs, [p["server_cpu_ms_per_req"] for _, p in pts], marker="o",
                 label=labels[name])
    for ax, title in ((ax1, "requests/s (higher is better)"), (ax2, "p50 ms (lower is better)"),
                      (ax3, "server CPU ms per request (lower is better)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["concurrency"] for p in r["phases"]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"POST {OPENAI_ROUTE}, one fake upstream, one run "
                 f"({r['git_head']}, {r['started_at']})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- main -------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    # --git-ref: pixelgate from that committed tree (git archive), for an A/B in one session
    pythonpath = servers.export_ref(args.git_ref, work) if args.git_ref else None
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with Servers() as started:
        fake = started.add(servers.app_server(work, "fake-openai", "fake_openai.py"))
        fake.wait_ready("/health", 30)
        config = servers.gateway_config(work, upstream=fake.url, default="openai")
        if args.startup_runs > 0:
            results["startup"] = startup(work, config, args.startup_runs, pythonpath)

        gw = started.add(servers.gateway(work, "pixelgate", config, log_level=args.log_level,
                                         pythonpath=pythonpath))
        gw.wait_ready("/health", 90)
        time.sleep(1.0)
        info: dict[str, Any] = {"pixelgate": {"ready_s": round(gw.ready_s or 0, 3),
                                              "idle_rss_mb": round(tree_rss_kb(gw.pid) / 1024, 1)}}
        targets: dict[str, Server] = {"pixelgate": gw}
        bare = started.add(servers.app_server(work, "bare", "min_proxy.py", "--upstream",
                                              fake.url))
        bare.wait_ready("/health", 30)
        targets["bare"] = bare
        venv = None if args.no_litellm else servers.litellm_venv(args.litellm_venv,
                                                                   not args.no_install)
        if venv is not None:
            lite = started.add(servers.litellm(work, fake.url, venv))
            try:
                lite.wait_ready(servers.LITELLM_HEALTH, 120, ok_below=300)
                time.sleep(1.0)
                info["litellm"] = {"ready_s": round(lite.ready_s or 0, 3),
                                   "idle_rss_mb": round(tree_rss_kb(lite.pid) / 1024, 1),
                                   "version": subprocess.run(
                                       [str(venv / "bin" / "python"), "-c",
                                        "import importlib.metadata as m;"
                                        "print(m.version('litellm'))"],
                                       capture_output=True, text=True).stdout.strip()}
                targets["litellm"] = lite
            except RuntimeError as exc:
                print(f"LiteLLM SKIPPED: it did not start: {exc}", file=sys.stderr)
                lite.stop()
        elif args.no_litellm:
            print("LiteLLM SKIPPED (--no-litellm)", file=sys.stderr)
        results["servers"] = info

        def target(name: str) -> load.Target:
            return load.Target(targets[name].url + OPENAI_ROUTE, OPENAI_BODY, headers_for(name),
                               load.expect(200, b'"data"'), timeout=args.request_timeout)

        # smoke test: one request through each target before anything is measured
        for name in targets:
            probe = asyncio.run(load.burst(target(name), n=1))
            if probe["ok"] != 1:
                raise RuntimeError(f"{name}: probe failed {probe['errors']}\n"
                                   f"{targets[name].log_tail()}")
        # rounds alternate the targets again, so that a ratio pairs rows measured close
        # together (this VM's speed drifts within minutes)
        for rnd in range(1, args.rounds + 1):
            for c in concs:
                for name in TARGETS:
                    if name not in targets:
                        continue
                    print(f"... {name} c={c} {args.duration:g} s (round {rnd})", file=sys.stderr)
                    res = measure(targets[name], target(name), concurrency=c, args=args)
                    results["phases"].append({"target": name, "round": rnd, **res})
        results["ratios"] = ratios(results["phases"])

        if not args.no_native:
            native = load.Target(gw.url + "/v1/generations", NATIVE_BODY,
                                 {**headers_for("pixelgate"), "prefer": "wait=30"},
                                 load.expect(200, b'"SUCCEEDED"'), timeout=args.request_timeout)
            for c in [int(c) for c in args.native_concurrency.split(",") if c.strip()]:
                print(f"... pixelgate native c={c} {args.duration:g} s", file=sys.stderr)
                res = measure(gw, native, concurrency=c, args=args)
                res["some_failed"] = any_failed(gw.url)
                results["native"].append(res)

        if args.flame:
            print(f"... py-spy flame graph, c=16, {args.flame_seconds:g} s", file=sys.stderr)
            results["flame"] = flame(gw, target("pixelgate"), args)
        results["servers"]["pixelgate"]["rss_after_mb"] = round(tree_rss_kb(gw.pid) / 1024, 1)
        results["servers"]["pixelgate"]["log_warnings"] = gw.log_warnings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per phase")
    p.add_argument("--concurrency", default="1,16,64", help="OpenAI-route concurrencies")
    p.add_argument("--rounds", type=int, default=1,
                   help="OpenAI-route rounds, the targets alternated in each (ratios: median)")
    p.add_argument("--native-concurrency", default="1,64", help="native-route concurrencies")
    p.add_argument("--client", choices=("auto", "wrk", "aiohttp"), default="auto",
                   help="closed-loop client (auto: wrk when installed)")
    p.add_argument("--no-native", action="store_true", help="skip the native route")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    p.add_argument("--git-ref", default=None,
                   help="run pixelgate from this committed tree instead of the working tree")
    p.add_argument("--no-install", action="store_true",
                   help="do not install LiteLLM when its venv is missing (skip it instead)")
    p.add_argument("--litellm-venv", type=Path, default=BENCH_DIR / ".venv-litellm")
    p.add_argument("--startup-runs", type=int, default=3,
                   help="pixelgate serve starts timed (1 fresh + restarts; 0: skip)")
    p.add_argument("--flame", default=None, metavar="OUT.svg",
                   help="record a py-spy flame graph of pixelgate during an extra c=16 run")
    p.add_argument("--flame-seconds", type=float, default=10.0)
    p.add_argument("--plot", default=str(report.RESULTS / "peers.png"),
                   help="PNG of req/s and p50 against concurrency ('' to skip)")
    p.add_argument("--replot", type=Path, default=None, metavar="RESULTS.json",
                   help="measure nothing: print the tables and draw the plot of an earlier run")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        old = json.loads(args.replot.read_text())
        print(tables(old))
        if args.plot:
            print(f"plot: {plot(old, Path(args.plot))}")
        return 0
    results: dict[str, Any] = report.header("bench_peers")
    results["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results.update(phases=[], native=[])
    with report.guarded_run(results, "pixelgate-bench-peers-", args.keep) as work:
        run(args, work, results)
    if args.plot and results["phases"]:
        png = plot(results, Path(args.plot))
        results["plot"] = str(png) if png else None
    path = report.write_results("bench_peers", results)
    print(tables(results))
    if results.get("plot"):
        print(f"plot: {results['plot']}")
    if results.get("flame"):
        print(f"flame graph: {results['flame'].get('svg') or results['flame'].get('error')}")
    return report.footer(results, path)


if __name__ == "__main__":
    sys.exit(main())
