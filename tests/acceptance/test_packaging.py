"""The wheel builds, installs into a clean virtualenv outside the repository, and the
installed ``pixelgate`` serves from it: migrations, web UI templates and static files,
API docs assets — all read from the installed package, never from the source tree."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelgate import __version__
from tests.acceptance.conftest import base_env, free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "pg_admin_wheel_test_0123456789abcdef"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --wheel`` of a copy of the sources (the tree is left untouched)."""
    work = tmp_path_factory.mktemp("build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(
        ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = work / "dist"
    # no isolation: the build backend comes from the test extra, nothing is downloaded
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed; its dependencies are the test
    environment's, reached through a path entry (not the editable install's finder)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    # a plain path line: .pth files inside it (the editable install's) are not processed
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_the_wheel_holds_migrations_templates_and_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted((ROOT / "src/pixelgate/db/migrations/versions").glob("*.py"))
    assert migrations
    for path in migrations:
        assert f"pixelgate/db/migrations/versions/{path.name}" in names
    assert "pixelgate/db/migrations/env.py" in names
    package = ROOT / "src/pixelgate"
    for folder in ("ui/templates", "ui/static"):
        for path in (package / folder).rglob("*"):
            if path.is_file():
                assert f"pixelgate/{path.relative_to(package)}" in names
    assert "pixelgate/py.typed" in names
    assert wheel.name.startswith(f"pixelgate-{__version__}-")


def _run(
    venv: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "pixelgate"), *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=120,
    )


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = base_env()
    env["PIXELGATE_DATA_DIR"] = str(tmp_path / "data")
    env["PIXELGATE_ADMIN_KEY"] = ADMIN_KEY
    env.pop("PYTHONPATH", None)
    yield tmp_path, env


def test_the_installed_package_is_the_one_that_runs(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pixelgate; print(pixelgate.__file__)"],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    version = _run(venv, "--version", cwd=cwd, env=env)
    assert version.returncode == 0
    assert version.stdout.strip() == f"pixelgate {__version__}"


def test_the_installed_package_migrates_and_serves(
    venv: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    migrated = _run(venv, "migrate", cwd=cwd, env=env)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log = cwd / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(venv / "bin" / "pixelgate"), "serve", "--port", str(port)],
            cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/ui/login").status_code == 200  # templates
            css = client.get("/ui/static/ui.css")
            assert css.status_code == 200 and css.content  # static files
            assert client.get("/docs").status_code == 200  # the API docs' assets
            gen = client.post(
                "/v1/generations", json={"prompt": "from the wheel"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}", "Prefer": "wait=20"},
            ).json()
            assert gen["status"] == "SUCCEEDED", gen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
