"""Every fenced example of README.md and docs/**/*.md, run or checked against a live server.

One test per block, in page order (an ``output`` block checks the block before it). How
a block is tested is chosen by its language or by the marker before it: see
``tests/docs/blocks.py`` and docs/testing.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
from typing import Any

import pytest
from pytest_examples import CodeExample, EvalExample

from pixelgate.config import load_settings
from pixelgate.errors import PixelgateError
from pixelgate.providers.registry import validate_provider_tables
from tests.docs.blocks import Block, all_blocks
from tests.docs.checks import (
    shape_errors,
    sse_data,
    sse_event_names,
    substitute,
    synopsis_lines,
)
from tests.docs.conftest import DocsSite

pytestmark = pytest.mark.xdist_group("docs")

BLOCKS = all_blocks()
SHELL_TIMEOUT_S = 90.0


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example(block: Block, request: pytest.FixtureRequest) -> None:
    if block.kind == "unmarked":
        pytest.fail(
            f"{block.id}: a ```{block.lang or ''} block neither runs by default nor carries a "
            "marker; add <!-- example: KIND … --> before it (docs/testing.md)"
        )
    if block.kind == "skip":
        assert block.marker is not None
        pytest.skip(f"{block.id}: {block.marker.args.strip('()')}")
    if block.kind == "toml":
        _check_toml(block, request.getfixturevalue("tmp_path"))
        return
    site: DocsSite = request.getfixturevalue("docs_site")
    _result(block, site, request)


def _result(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    """Run (or check) a block once per session, after the blocks it depends on.

    Test order is not guaranteed (pytest-xdist, ``-k``): a Python block first runs the
    page's earlier Python blocks, whose globals it shares; an ``output`` block the block
    it shows the output of. Each block runs once; later callers get its output.
    """
    if block.id in site.outputs:
        return site.outputs[block.id]
    if block.kind == "python":
        for earlier in _earlier(block, lambda b: b.kind == "python"):
            _result(earlier, site, request)
    output = _HANDLERS[block.kind](block, site, request)
    site.outputs[block.id] = output
    return output


def _earlier(block: Block, keep: Any) -> list[Block]:
    """The blocks of ``block``'s page above it that ``keep`` selects, in page order."""
    return [b for b in BLOCKS if b.path == block.path and b.line < block.line and keep(b)]


# --- handlers ------------------------------------------------------------------------------


def _run_shell(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    script = substitute(block.source, base_url=site.base_url, key=site.key)
    return _shell(script, site, check=True, where=block.id)


def _run_python(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("python_dir")
    capsys: pytest.CaptureFixture[str] = request.getfixturevalue("capsys")
    eval_example: EvalExample = request.getfixturevalue("eval_example")
    source = substitute(block.source, base_url=site.base_url, key=site.key)
    example = CodeExample.create(
        source, path=block.path, start_line=block.line, prefix=block.lang
    )
    globals_ = site.python_globals.setdefault(block.page, {})
    globals_.update(eval_example.run(dataclasses.replace(example), module_globals=globals_))
    return capsys.readouterr().out


def _run_js(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = site.root / f"example-{block.line}.js"
    script.write_text(substitute(block.source, base_url=site.base_url, key=site.key))
    result = subprocess.run(
        [node, str(script)], capture_output=True, text=True, timeout=SHELL_TIMEOUT_S
    )
    assert result.returncode == 0, f"{block.id}: node exited {result.returncode}\n{result.stderr}"
    return result.stdout


def _check_output(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    assert block.marker is not None
    command = re.fullmatch(r"of `(.+)`", block.marker.args, re.S)
    if command:
        actual = _shell(command[1], site, check=False, where=block.id)
        missing = [
            line.strip()
            for line in block.source.splitlines()
            if line.strip() and line.strip() not in actual
        ]
        assert not missing, f"{block.id}: not printed by {command[1]!r}: {missing}\n{actual}"
        return actual
    ran = _earlier(block, lambda b: b.runs)
    assert ran, f"{block.id}: no example runs before this output on the page"
    actual = _result(ran[-1], site, request)
    names = sse_event_names(block.source)
    if names:
        got = sse_event_names(actual)
        assert set(names) <= set(got), f"{block.id}: events {names} not all in {got}"
        got_data = sse_data(actual)
        for name, shown in sse_data(block.source).items():
            errors = shape_errors(shown[0], got_data[name][0], f"event {name}")
            assert not errors, f"{block.id}: {errors}"
        return actual
    errors = shape_errors(_json(block.source, block), _json(actual, block))
    assert not errors, f"{block.id}: the answer differs from the docs: {errors}"
    return actual


def _check_request(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    assert block.marker is not None
    method, path = block.marker.args.split()[:2]
    body = _json(re.sub(r"\A[A-Z]+ /\S*\n", "", block.source), block)
    with site.client() as http:
        answer = http.request(method, path, json=body)
    assert answer.is_success, f"{block.id}: {method} {path}: {answer.status_code} {answer.text}"
    return answer.text


def _check_response(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    assert block.marker is not None
    method, path, *rest = block.marker.args.split(maxsplit=2)
    path = path.replace("{id}", site.generation_id)
    body = json.loads(rest[0]) if rest else None
    with site.client() as http:
        answer = http.request(method, path, json=body)
    assert answer.is_success, f"{block.id}: {method} {path}: {answer.status_code} {answer.text}"
    errors = shape_errors(_json(block.source, block), answer.json())
    assert not errors, f"{block.id}: {method} {path} differs from the docs: {errors}"
    return answer.text


def _check_synopsis(block: Block, site: DocsSite, request: pytest.FixtureRequest) -> str:
    entries = synopsis_lines(block.source)
    assert entries, f"{block.id}: no 'pixelgate …' line in the synopsis"
    problems: list[str] = []
    for command, flags in entries:
        helptext = _shell(
            " ".join(["pixelgate", *command, "--help"]), site, check=False, where=block.id
        )
        if "Usage:" not in helptext or "No such command" in helptext:
            problems.append(f"pixelgate {' '.join(command)}: no such command")
            continue
        problems += [
            f"pixelgate {' '.join(command)} {flag}: no such option"
            for flag in flags
            if not re.search(rf"(?<![\w-]){re.escape(flag)}\b", helptext)
        ]
    assert not problems, f"{block.id}: {problems}"
    return ""


_HANDLERS: dict[str, Any] = {
    "shell": _run_shell,
    "run": _run_shell,
    "python": _run_python,
    "js": _run_js,
    "output": _check_output,
    "request": _check_request,
    "response": _check_response,
    "synopsis": _check_synopsis,
}


# --- helpers -------------------------------------------------------------------------------


def _check_toml(block: Block, tmp_path: Any) -> None:
    """A TOML example is a config file pixelgate starts with (as ``serve`` checks it)."""
    path = tmp_path / "example.toml"
    path.write_text(block.source)
    try:
        validate_provider_tables(load_settings(config=path, data_dir=tmp_path / "data"))
    except PixelgateError as exc:
        pytest.fail(f"{block.id}: {exc.message}")


def _shell(script: str, site: DocsSite, *, check: bool, where: str) -> str:
    """``script`` run by bash in the site's folder; a timeout kills all it started."""
    proc = subprocess.Popen(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=site.root,
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=SHELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{where}: still running after {SHELL_TIMEOUT_S:g} s:\n{script}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing an example starts outlives it
    if check:
        assert proc.returncode == 0, (
            f"{where}: exited {proc.returncode}\n--- script ---\n{script}\n"
            f"--- stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-3000:]}"
        )
        return stdout
    return stdout + stderr


def _json(text: str, block: Block) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{block.id}: not JSON ({exc}):\n{text[:500]}")
