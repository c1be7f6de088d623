"""Percentiles, text tables and the JSON results file of a bench run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib.servers import ROOT
from benchlib.workdir import make_workdir

RESULTS = ROOT / "bench" / "results"


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else format(value, spec)
    return str(value)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A right-aligned plain-text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[Any]) -> str:
        return "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def markdown(rows: list[list[Any]], header: list[str]) -> str:
    """A markdown table (ready to paste into docs/benchmarks.md)."""
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def git(*argv: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "python": platform.python_version(), "cpu": cpu,
            "loadavg": os.getloadavg()}


def header(script: str) -> dict[str, Any]:
    """The common head of a results file: when, what, which commit, which machine."""
    return {
        "script": script,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "--", "src")),
        "machine": machine(),
    }


def write_results(script: str, results: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    """``bench/results/<script>-<UTC stamp>.json`` (git-ignored)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{script}-{stamp}.json"
    results.setdefault("machine_after", {"loadavg": os.getloadavg()})
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def guarded_run(results: dict[str, Any], prefix: str, keep: bool) -> Iterator[Path]:
    """A throw-away work dir for the run's servers (logs, data; see
    :mod:`benchlib.workdir`), with what creating a file costs there; an exception inside
    is recorded as ``results["error"]`` (what was measured before it is kept), not raised."""
    work, results["machine"]["file_create_us"] = make_workdir(prefix)
    try:
        yield work
    except Exception as exc:  # keep what was measured; say what failed
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if keep:
            results["workdir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def footer(results: dict[str, Any], path: Path) -> int:
    """Print the commit, the machine's load and the results file; the exit status."""
    dirty = " (src dirty)" if results.get("src_dirty") else ""
    created = results["machine"].get("file_create_us")
    created_text = "" if created is None else f", a file created in {created:g} µs of CPU"
    print(f"commit {results.get('git_head')}{dirty}, load before "
          f"{results['machine']['loadavg'][0]:.2f}{created_text}; results: {path}")
    if "error" in results:
        print(f"INCOMPLETE RUN: {results['error']}")
        return 1
    return 0
