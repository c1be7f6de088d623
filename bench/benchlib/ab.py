"""What the A/B scripts (``bench_ab.py``, ``bench_cpu.py``) share: the two trees, the
route list, their options and the end of a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import report, servers

__all__ = ["add_tree_options", "finish", "parse_routes", "trees"]


def add_tree_options(p: argparse.ArgumentParser, *, rounds: int = 4) -> None:
    """``--base``, ``--other``, ``--rounds`` and ``--keep``."""
    p.add_argument("--base", required=True, help="the committed tree to compare against")
    p.add_argument("--other", default=None, help="a second committed tree (default: the "
                                                 "working tree)")
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")


def trees(args: argparse.Namespace, work: Path) -> dict[str, str]:
    """``{"base": src, "other": src}``: committed trees exported into ``work``, or the
    working tree's ``src`` for ``other`` when no ``--other`` was given."""
    other = (servers.export_ref(args.other, work, "src-other") if args.other
             else str(servers.ROOT / "src"))
    return {"base": servers.export_ref(args.base, work, "src-base"), "other": other}


def parse_routes(spec: str) -> list[tuple[str, int]]:
    """``"native:64,openai:16"`` -> ``[("native", 64), ("openai", 16)]``."""
    return [(name, int(c)) for name, _, c in (r.partition(":") for r in spec.split(","))]


def finish(script: str, results: dict[str, Any], args: argparse.Namespace,
           table: Callable[[list[dict[str, Any]], str, str], str]) -> int:
    """Write the results file, print the summary's table and the footer; the exit status."""
    path = report.write_results(script, results)
    if results.get("summary"):
        print(table(results["summary"], args.base, args.other or "working tree") + "\n")
    return report.footer(results, path)
