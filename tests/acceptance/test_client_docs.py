"""Every Python example of docs/client.md runs as written against a live server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import ADMIN_KEY, Launcher, Server, base_env, placeholder_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def env(module_launcher: Launcher) -> dict[str, str]:
    server: Server = module_launcher.start(config=placeholder_config())
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    r = admin.post("/admin/accounts", json={"name": "docs", "tier": "PRO", "credits": 1000})
    assert r.status_code == 201, r.text
    key = admin.post("/admin/accounts/docs/keys", json={}).json()["key"]
    admin.close()
    return {**base_env(), "PIXELGATE_URL": server.base_url, "PIXELGATE_API_KEY": key,
            "PIXELGATE_ADMIN_KEY": ADMIN_KEY}


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKS[index]], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{BLOCKS[index]}\n--- stderr ---\n{result.stderr}"
