"""The ``pixelgate`` command as a user runs it: generate, accounts, keys, providers, bad
configuration and the generated admin key."""

from __future__ import annotations

import io
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import httpx
from PIL import Image

from tests.acceptance.conftest import ADMIN_KEY, ServerFactory, free_port, placeholder_config

RunCli = Callable[..., CompletedProcess[str]]
KEY_ID = re.compile(r"\bkey (\S+) for (\S+)")


def test_generate_writes_the_image(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "fox.jpg"
    result = run_cli(
        ["generate", "a red fox", "--size", "128x96", "--format", "jpeg", "-o", str(out)],
        env={"PIXELGATE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert out.is_file(), result.stdout
    assert "fox.jpg" in result.stdout, result.stdout
    with Image.open(io.BytesIO(out.read_bytes())) as img:
        img.load()
        assert img.format == "JPEG"
        assert img.size == (128, 96)


def _parallel(*calls: Callable[[], CompletedProcess[str]]) -> list[CompletedProcess[str]]:
    """Run independent CLI commands at once (each is a fresh interpreter)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [f.result() for f in futures]


def test_accounts_and_keys_round_trip(run_cli: RunCli, start_server: ServerFactory) -> None:
    server = start_server(config=placeholder_config(latency_ms=0))
    env = {"PIXELGATE_DATA_DIR": str(server.data_dir), "PIXELGATE_ADMIN_KEY": ADMIN_KEY}

    created = run_cli(["accounts", "create", "acme", "--tier", "PRO", "--credits", "25"],
                      env=env, check=True)
    assert "acme" in created.stdout and "PRO" in created.stdout, created.stdout

    keys: dict[str, str] = {}
    made_keys = _parallel(*(
        lambda label=label: run_cli(["keys", "create", "--account", "acme", "--name", label],
                                    env=env, check=True)
        for label in ("used", "unused")
    ))
    for label, made in zip(("used", "unused"), made_keys, strict=True):
        plain = made.stdout.strip().splitlines()[-1].strip()
        match = KEY_ID.search(made.stderr)
        assert match and match[2] == "acme", made.stderr
        assert len(plain) >= 20 and " " not in plain, made.stdout
        assert plain not in made.stderr
        keys[label] = plain
        keys[f"{label}_id"] = match[1]
    assert keys["used"] != keys["unused"] and keys["used_id"] != keys["unused_id"]

    # CLI-made keys work on the running server
    api = server.client(key=keys["used"])
    r = api.get("/v1/generations")
    assert r.status_code == 200, r.text

    revoked, listed = _parallel(
        lambda: run_cli(["keys", "revoke", keys["unused_id"]], env=env, check=True),
        lambda: run_cli(["accounts", "list"], env=env, check=True),
    )
    assert keys["unused_id"] in revoked.stdout
    assert "acme" in listed.stdout and "PRO" in listed.stdout and "25" in listed.stdout

    # the revoked key (never seen by the server) is refused at once
    r = server.client(key=keys["unused"]).get("/v1/generations")
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    # the other key of the account is untouched
    assert api.get("/v1/generations").status_code == 200

    listed = run_cli(["keys", "list"], env=env, check=True)
    assert "acme" in listed.stdout
    for label in ("used", "unused"):
        assert keys[label] not in listed.stdout, "keys list must not print the secret key"
    # `keys list` must show ids a user can pass to `keys revoke` (also when piped)
    for label in ("used", "unused"):
        assert keys[f"{label}_id"] in listed.stdout, (
            f"`pixelgate keys list` does not show the full key id {keys[label + '_id']!r}, "
            f"so `keys revoke ID` cannot be used from its output:\n{listed.stdout}"
        )


def test_providers_lists_placeholder(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["providers"], env={"PIXELGATE_DATA_DIR": str(tmp_path / "data")},
                     check=True)
    rows = [line for line in result.stdout.splitlines() if "placeholder" in line]
    assert rows, result.stdout
    # name, kind, configured, health: the built-in provider is ready with no key at all
    assert re.search(r"placeholder\W+placeholder\W+yes\W+operational", rows[0]), rows[0]
    # with no keys, every other provider is listed as not configured
    for kind in ("openai", "gemini", "stability", "replicate"):
        line = next((ln for ln in result.stdout.splitlines() if f" {kind} " in ln), None)
        assert line is not None, f"{kind} missing from:\n{result.stdout}"
        assert re.search(rf"{kind}\W+{kind}\W+no\W+not_configured", line), line


def _serve_fails(run_cli: RunCli, env: dict[str, str], *, names: tuple[str, ...]) -> None:
    # no --port flag: a flag would win over PIXELGATE_PORT
    env = {"PIXELGATE_PORT": str(free_port()), **env}
    result = run_cli(["serve"], env=env, timeout=20)
    assert result.returncode != 0, f"serve started with a bad config {env}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"want one line on stderr, got {len(lines)}:\n{result.stderr}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"


def test_bad_configuration_is_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    syntax = tmp_path / "syntax.toml"
    syntax.write_text('[providers.x\nkind = "placeholder"\n')
    badval = tmp_path / "badval.toml"
    badval.write_text('[providers.x]\nkind = "placeholder"\nlatency_ms = "slow"\n')
    cases: list[tuple[dict[str, str], tuple[str, ...]]] = [
        ({"PIXELGATE_PORT": "abc"}, ("port",)),
        ({"PIXELGATE_CONFIG": str(syntax)}, ("syntax.toml",)),
        ({"PIXELGATE_CONFIG": str(badval)}, ("latency_ms",)),
    ]
    for n, (env, _) in enumerate(cases):
        env["PIXELGATE_DATA_DIR"] = str(tmp_path / f"data{n}")
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = [pool.submit(_serve_fails, run_cli, env, names=names) for env, names in cases]
    for future in futures:
        future.result()


def test_any_first_command_announces_the_generated_admin_key(
    run_cli: RunCli, tmp_path: Path
) -> None:
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    first = run_cli(["accounts", "list"], env=env, check=True)
    key = (tmp_path / "data" / "admin_key").read_text().strip()
    assert first.stderr.count(key) == 1, first.stderr
    assert key not in first.stdout
    again = run_cli(["accounts", "list"], env=env, check=True)
    assert key not in again.stderr and key not in again.stdout


def test_generated_admin_key(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(config=None, data_dir=data_dir, admin_key=None)
    stderr = first.stderr()
    key_file = data_dir / "admin_key"
    assert key_file.is_file(), stderr
    mode = stat.S_IMODE(key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    key = key_file.read_text().strip()
    assert len(key) >= 32 and " " not in key
    assert stderr.count(key) == 1, f"the generated key must be printed exactly once:\n{stderr}"
    assert first.stdout().count(key) == 0

    r = first.client(key=key).get("/v1/generations")
    assert r.status_code == 200, r.text
    r = first.client(key=key).post("/v1/generations", json={"prompt": "admin"},
                                   headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    assert first.client(key=key + "x").get("/v1/generations").status_code == 401
    first.kill()

    second = start_server(config=None, data_dir=data_dir, admin_key=None, port=first.port)
    assert key_file.read_text().strip() == key, "the admin key file changed on restart"
    assert key not in second.stderr()
    assert not re.search(r"pg_admin_\S+", second.stderr()), second.stderr()
    r = httpx.get(f"{second.base_url}/v1/generations",
                  headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text


def _wait_status(client: httpx.Client, path: str, status: int, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while (got := client.get(path).status_code) != status:
        assert time.monotonic() < deadline, f"{path} still answers {got}, not {status}"
        time.sleep(0.25)


def test_an_operator_can_always_enable_a_locked_out_admin_account(
    run_cli: RunCli, start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(config=placeholder_config(), data_dir=data_dir)
    env = {"PIXELGATE_DATA_DIR": str(data_dir), "PIXELGATE_ADMIN_KEY": ADMIN_KEY}
    admin = server.client()
    # the API refuses to disable the last admin…
    r = admin.patch("/admin/accounts/admin", json={"disabled": True})
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin"
    # …and should it happen anyway (from the box, an older version), the CLI is the way back
    run_cli(["accounts", "disable", "admin"], env=env, check=True)
    _wait_status(admin, "/admin/accounts", 401)
    listed = run_cli(["accounts", "list"], env=env, check=True).stdout
    assert re.search(r"admin\s.*disabled", listed), listed
    run_cli(["accounts", "enable", "admin"], env=env, check=True)
    _wait_status(admin, "/admin/accounts", 200)


def test_accounts_create_checks_the_webhook_url_like_the_api(
    run_cli: RunCli, tmp_path: Path
) -> None:
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    refused = run_cli(
        ["accounts", "create", "hooky", "--webhook-url", "http://127.0.0.1:9/hook"], env=env
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--webhook-url" in refused.stderr and "non-public" in refused.stderr
    assert "hooky" not in run_cli(["accounts", "list"], env=env, check=True).stdout
    allowed = run_cli(
        ["accounts", "create", "hooky", "--webhook-url", "http://127.0.0.1:9/hook"],
        env={**env, "PIXELGATE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"},
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "hooky" in run_cli(["accounts", "list"], env=env, check=True).stdout


def test_migrate_says_whether_it_migrated(run_cli: RunCli, tmp_path: Path) -> None:
    env = {"PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    first = run_cli(["migrate"], env=env, check=True).stdout
    assert "database migrated: schema empty -> " in first, first
    again = run_cli(["migrate"], env=env, check=True).stdout
    assert "database is up to date (revision " in again, again
