"""Every example in docs/migrate/*.md runs against a live server and answers what the page
shows.

A page's ```bash blocks run in order in one shell (variables carry over) with ``$KEY`` an
admin key, ``pixelgate`` on the PATH and the server's own settings; ``http://127.0.0.1:8080``
is the server. ```python blocks run as scripts with the same environment. A ```json block
right after one of them is the answer it must print: every key shown must be there with
that value — a string with ``…`` matches any text in its place, and numbers of timings
(keys ending in ``Ms``, ``_ms``, ``_s``) may differ. Keys not shown may be added. A
```toml block starting with ``# pixelgate.toml`` is the server's config file; other
blocks (```jsonc, ```text, ```sh, ```toml) are for reading.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import ADMIN_KEY, ServerFactory, base_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "migrate"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md")
DOC_URL = "http://127.0.0.1:8080"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
VOLATILE_NUMBER = re.compile(r"(Ms|_ms|_s)$")
RUN = ("bash", "python")
MARK = "@@@ block {} @@@"


@dataclass
class Block:
    lang: str
    text: str
    line: int


def blocks(page: Path) -> list[Block]:
    source = page.read_text()
    return [
        Block(m.group(1), m.group(2), source.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(source)
    ]


def matches(expected: Any, actual: Any, path: str = "$", key: str = "") -> list[str]:
    """Where ``actual`` differs from the documented ``expected`` (see the module doc)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems = []
        for k, v in expected.items():
            if k not in actual:
                problems.append(f"{path}.{k}: missing")
            else:
                problems += matches(v, actual[k], f"{path}.{k}", k)
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [f"{path}: expected a list of at least {len(expected)}, got {actual!r}"]
        return [p for i, v in enumerate(expected) for p in matches(v, actual[i], f"{path}[{i}]")]
    if isinstance(expected, str) and "…" in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("…"))
        ok = isinstance(actual, str) and re.fullmatch(pattern, actual, re.S)
        return [] if ok else [f"{path}: {actual!r} does not match {expected!r}"]
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        numeric = isinstance(actual, int | float) and not isinstance(actual, bool)
        if numeric and (VOLATILE_NUMBER.search(key) or actual == expected):
            return []
        return [f"{path}: {actual!r} != {expected!r}"]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]


def parse_output(output: str) -> Any:
    try:
        return json.loads(output)
    except ValueError:
        lines = [line for line in output.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None


def test_matches_rules() -> None:
    assert matches({"a": "gen_…", "n": 1, "elapsedMs": 5}, {"a": "gen_x", "n": 1,
                   "elapsedMs": 9, "extra": 0}) == []
    assert matches({"n": 1}, {"n": 2}) and matches({"a": "x"}, {}) and matches([1], [])
    assert matches({"url": "http://h/…/x.png"}, {"url": "http://h/a/b/x.webp"})


def test_every_seed_has_a_page() -> None:
    seeds = Path(__file__).resolve().parents[3] / "shared" / "seeds"
    numbers = {p.name[:3] for p in seeds.glob("[0-9][0-9][0-9]_*.txt")} if seeds.exists() else set()
    pages = {p.name[:3] for p in PAGES}
    assert {"000", "001", "002", "003", "004"} <= pages
    assert numbers <= pages
    for page in PAGES:
        assert any(b.lang in RUN for b in blocks(page)), f"{page.name} has no runnable example"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_examples_run(page: Path, start_server: ServerFactory, tmp_path: Path) -> None:
    found = blocks(page)
    config = next(
        (b.text for b in found if b.lang == "toml" and b.text.startswith("# pixelgate.toml")),
        None,
    )
    server = start_server(config=config)
    env = base_env()
    env.update(server.env)
    env["KEY"] = ADMIN_KEY
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    runnable = [(i, b) for i, b in enumerate(found) if b.lang in RUN]
    script = ["set -euo pipefail"]
    for i, b in runnable:
        if b.lang == "bash":
            script += [f"printf '\\n{MARK.format(i)}\\n'", b.text.replace(DOC_URL, server.base_url)]
        else:
            code = tmp_path / f"block-{i}.py"
            code.write_text(b.text.replace(DOC_URL, server.base_url))
            script += [f"printf '\\n{MARK.format(i)}\\n'", f"{sys.executable} {code}"]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=240,
    )
    assert result.returncode == 0, (
        f"{page.name}: an example failed\n--- stdout ---\n{result.stdout[-4000:]}\n"
        f"--- stderr ---\n{result.stderr[-4000:]}"
    )
    outputs = {}
    pieces = re.split(r"^@@@ block (\d+) @@@\n", result.stdout, flags=re.M)
    for index, text in zip(pieces[1::2], pieces[2::2], strict=True):
        outputs[int(index)] = text.replace(server.base_url, DOC_URL)
    checked = 0
    for i, b in runnable:
        if i + 1 < len(found) and found[i + 1].lang == "json":
            expected = json.loads(found[i + 1].text)
            actual = parse_output(outputs[i])
            problems = matches(expected, actual)
            assert not problems, (
                f"{page.name}:{b.line}: the answer differs from the page's\n"
                + "\n".join(problems) + f"\n--- output ---\n{outputs[i][-3000:]}"
            )
            checked += 1
    assert checked, f"{page.name}: no example has its answer shown"
