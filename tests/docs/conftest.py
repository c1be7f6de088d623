"""One live ``pixelgate serve`` for every example of the docs, shared by the whole session.

The server runs as a user's would after the README's quick start: in its own working
directory, data in the default ``~/.local/share/pixelgate`` (``~`` is the site root), the
admin key generated there. An ``openai``
instance points at a fake of OpenAI's Images API on loopback (tests/fakes.py), so the
examples that name OpenAI models run without a real key.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.acceptance.conftest import Launcher, base_env
from tests.fakes import LoopbackServer
from tests.providers.fakes.openai import FakeOpenAIImages

#: the default data directory of a user whose home is the site root (platformdirs)
DATA_DIR = ".local/share/pixelgate"
#: files the examples open, made here (PNG, 64x64; the mask's upper half transparent)
IMAGES = ("me.png", "room.png")
MASKS = ("hat-mask.png", "mask.png")


def _config(openai_base_url: str) -> str:
    return f"""
[providers.fast]
kind = "placeholder"
latency_ms = 0

[providers.flaky]
kind = "placeholder"
fail_rate = 1.0

[providers.openai]
kind = "openai"
api_key = "sk-docs-fake"
base_url = "{openai_base_url}"

[routing]
default = ["fast"]

[routing.providers.flaky]
attempts = 1
"""


@dataclass
class DocsSite:
    """The live server and what the examples of one session share."""

    root: Path
    base_url: str
    key: str
    env: dict[str, str]
    generation_id: str
    #: what each block that ran or was checked printed or answered, by block id
    outputs: dict[str, str] = field(default_factory=dict)
    #: the globals of the Python blocks run so far, per page
    python_globals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )


def _write_images(folder: Path) -> None:
    for name in IMAGES:
        Image.new("RGB", (64, 64), (200, 120, 40)).save(folder / name)
    for name in MASKS:
        mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 64, 32))
        mask.save(folder / name)


def _shell_env(root: Path, key: str, generation_id: str, config: Path) -> dict[str, str]:
    curl_home = root / "curl"
    curl_home.mkdir(exist_ok=True)
    # an example whose curl gets an HTTP error fails, as a user would notice it had
    (curl_home / ".curlrc").write_text("--fail-with-body\n--show-error\n--max-time 60\n")
    env = base_env()
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        CURL_HOME=str(curl_home),
        # "~" of the examples is the site root: their default data directory is the server's
        HOME=str(root),
        XDG_DATA_HOME=str(root / ".local" / "share"),
        KEY=key,
        ID=generation_id,
        PIXELGATE_CONFIG=str(config),
    )
    return env


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsSite]:
    root = tmp_path_factory.mktemp("docs-site")
    _write_images(root)
    launcher = Launcher(root)
    fake = FakeOpenAIImages()
    routes = {"/v1/images/generations": fake.route, "/v1/images/edits": fake.route}
    with LoopbackServer(routes) as openai:
        try:
            server = launcher.start(
                config=_config(openai.url("/v1")), data_dir=root / DATA_DIR, admin_key=None
            )
            key = (root / DATA_DIR / "admin_key").read_text().strip()
            with httpx.Client(
                base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as http:
                # what the examples assume exists, whatever order they run in: a
                # succeeded and a failed generation, a template
                gen = http.post(
                    "/v1/generations",
                    json={"prompt": "A lighthouse at dusk", "width": 768, "height": 512},
                    headers={"Prefer": "wait=30"},
                ).raise_for_status().json()
                http.post(
                    "/v1/generations",
                    json={"prompt": "A storm", "provider": "flaky", "fallback_image": False},
                    headers={"Prefer": "wait=30"},
                ).raise_for_status()
                http.post(
                    "/v1/templates",
                    json={"name": "styled", "text": "A {subject} in the style of {style}"},
                ).raise_for_status()
            config = next(root.glob("pixelgate-*.toml"))
            yield DocsSite(
                root=root,
                base_url=server.base_url,
                key=key,
                env=_shell_env(root, key, gen["id"], config),
                generation_id=gen["id"],
            )
        finally:
            launcher.close()


@pytest.fixture
def python_dir(docs_site: DocsSite) -> Iterator[Path]:
    """The working directory of Python examples: its own data dir, the example images."""
    folder = docs_site.root / "python"
    if not folder.exists():
        folder.mkdir()
        for name in (*IMAGES, *MASKS):
            shutil.copy(docs_site.root / name, folder / name)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(cwd)
