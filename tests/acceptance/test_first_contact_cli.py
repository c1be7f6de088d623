"""A new user's first commands: --version, a taken port, file names of generate -o, and
one data directory for serve, generate and the Python API wherever they run."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pixelgate import __version__
from tests.acceptance.conftest import base_env

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def test_version(run_cli: RunCli) -> None:
    result = run_cli(["--version"], env={}, check=True)
    assert result.stdout.strip() == f"pixelgate {__version__}"


def test_a_taken_port_is_one_line_and_never_announced_as_listening(
    run_cli: RunCli, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            ["serve", "--port", str(port)], env={"PIXELGATE_DATA_DIR": str(tmp_path / "d")}
        )
    assert result.returncode == 1
    assert "listening on" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (choose another "
        "with --port or PIXELGATE_PORT)"
    ]
    assert "Traceback" not in result.stderr


def test_generate_n_2_with_o_writes_files_with_their_extension(
    run_cli: RunCli, tmp_path: Path
) -> None:
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "d")}
    run_cli(["generate", "a fox", "-n", "2", "-o", "out", "--format", "webp"], env=env, check=True)
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out-0.webp", "out-1.webp"]
    run_cli(["generate", "a fox", "-o", "one"], env=env, check=True)
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    run_cli(["generate", "a fox", "-o", "named.png"], env=env, check=True)
    assert (tmp_path / "named.png").exists()


def test_generate_and_the_python_api_share_one_data_directory(
    run_cli: RunCli, tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(xdg), "HOME": str(tmp_path / "home")}
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = run_cli(["generate", "a fox", "-o", "fox.png"], env=env, cwd=first_dir, check=True)
    data = xdg / "pixelgate"
    assert f"created the data directory {data}" in first.stderr
    assert (data / "pixelgate.db").exists() and (data / "admin_key").exists()
    assert not (first_dir / "pixelgate-data").exists()
    again = run_cli(["generate", "a fox", "-o", "fox.png"], env=env, cwd=second_dir, check=True)
    assert "created the data directory" not in again.stderr
    assert not (second_dir / "pixelgate-data").exists()
    child_env = base_env()
    child_env.update(env)
    api = subprocess.run(
        [sys.executable, "-c",
         "import pixelgate; r = pixelgate.generate('a fox'); print(r.status, r.images[0].key)"],
        env=child_env, cwd=second_dir, capture_output=True, text=True, timeout=60,
    )
    assert api.returncode == 0, api.stderr
    assert "\nSUCCEEDED ai/" in "\n" + api.stdout
    assert not (second_dir / "pixelgate-data").exists()
    assert len(list((data / "images").rglob("*.png"))) == 3  # all three in the one directory
