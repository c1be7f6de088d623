"""``pixelgate generate --from-file``, run in-process with typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelgate.cli import app

CONFIG = """
[providers.fast]
kind = "placeholder"

[providers.flaky]
kind = "placeholder"
fail_rate = 1.0

[routing]
default = ["fast"]

[routing.retry]
attempts = 1
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "pixelgate.toml"
    config.write_text(CONFIG)
    return {
        "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
        "PIXELGATE_CONFIG": str(config),
        "PIXELGATE_ADMIN_KEY": "pg_cli_test_admin_key_0123456789",
        "PIXELGATE_LOG_LEVEL": "error",
        "PIXELGATE_POLL_INTERVAL_S": "0.2",
    }


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", *args], env=env)
    return result.exit_code, result.output


def test_from_file_writes_every_image_and_prints_a_summary(
    tmp_path: Path, env: dict[str, str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "a red fox", "width": 40, "height": 24, "format": "webp"}),
                json.dumps("a blue whale"),
                "",
                "a lighthouse at dusk, plain text",
                json.dumps({"prompt": "two cats", "n": 2}),
            ]
        )
    )
    out_dir = tmp_path / "out"
    code, output = _run(env, "--from-file", str(prompts), "--size", "32x32", "-o", str(out_dir))
    assert code == 0, output
    files = sorted(out_dir.iterdir())
    assert len(files) == 5
    sizes = sorted(Image.open(f).size for f in files)
    assert sizes == [(32, 32)] * 4 + [(40, 24)]
    assert sum(f.suffix == ".webp" for f in files) == 1
    assert "4 requests: 4 succeeded" in output


def test_from_file_exits_1_when_any_generation_fails(tmp_path: Path, env: dict[str, str]) -> None:
    prompts = tmp_path / "mixed.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "fine", "width": 16, "height": 16})
        + "\n"
        + json.dumps({"prompt": "doomed", "width": 16, "height": 16, "provider": "flaky"})
        + "\n"
    )
    out_dir = tmp_path / "out"
    code, output = _run(env, "--from-file", str(prompts), "-o", str(out_dir))
    assert code == 1, output
    assert len(list(out_dir.iterdir())) == 1
    assert "1 failed" in output and "1 succeeded" in output
    assert "provider_unavailable" in output


def test_from_file_names_the_bad_line_and_admits_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('"ok"\n{"prompt": "x", "width": 10}\n')
    code, output = _run(env, "--from-file", str(prompts))
    assert code == 2
    assert "line 2" in output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": \n')
    code, output = _run(env, "--from-file", str(broken))
    assert code == 2 and "line 1" in output and "invalid JSON" in output
    too_big = tmp_path / "big.jsonl"
    too_big.write_text(json.dumps({"prompt": "x", "width": 9000, "height": 16}) + "\n")
    code, output = _run(env, "--from-file", str(too_big))
    assert code == 2 and "line 1" in output and "width" in output
    code, output = _run(env, "a prompt", "--from-file", str(prompts))
    assert code == 2
