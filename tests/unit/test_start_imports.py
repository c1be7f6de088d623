"""What ``pixelgate serve`` loads before it answers: modules the idle server and its first
API requests do not need stay unloaded until used (each is megabytes resident and
milliseconds of every start; docs/benchmarks.md, "Start and idle memory")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pixelgate.api.route_table import ROUTE_MODULES
from pixelgate.config import PROVIDER_KEY_ENV

#: loaded only by what uses them: the web UI's first page (its routes, Jinja2), the
#: PostgreSQL dialect on a PostgreSQL database, the first image (Pillow; its drawing
#: modules and FreeType at the placeholder's first), the first image with an ICC profile
#: (LittleCMS), the first SVG (the XML parser), Alembic only to migrate an existing
#: database, the adapter of a default provider instance that has no key, `limits` (the
#: first rate-limited call), tenacity (the first webhook delivery), the rarely used routers
NOT_AT_START = (
    "jinja2",
    "sqlalchemy.dialects.postgresql",
    "PIL.Image",
    "PIL.ImageDraw",
    "PIL.ImageFont",
    "PIL.ImageFilter",
    "PIL.ImageChops",
    "PIL.ImageCms",
    "defusedxml",
    "xml.etree.ElementTree",
    "alembic",
    "pixelgate.providers.gemini",
    "pixelgate.providers.stability",
    "pixelgate.providers.replicate",
    "pixelgate.providers.fal",
    "pixelgate.providers.ideogram",
    "pixelgate.providers.unsplash",
    "pixelgate.providers.openrouter",
    "pixelgate.providers.xai",
    "pixelgate.providers.recraft",
    "pixelgate.providers.bfl",
    "pixelgate.providers._setup",
    "limits",
    "pixelgate.ui.routes",
    "pixelgate.ui.pages",
    "pixelgate.ui.admin",
    "pixelgate.ui.charts",
    "tenacity",
    # FastAPI's check for pydantic.v1 models, while nothing imported it (api/_pydantic_v1_check.py)
    "pydantic.v1",
    # the API routers declared at their first request (api/route_table.py)
    *(module.name for module in ROUTE_MODULES if module.lazy),
)

_SCRIPT = """
import asyncio, json, sys
from pixelgate.config import load_settings
from pixelgate.api.app import create_app
from pixelgate.runtime import Runtime
import pixelgate.cli
settings = load_settings(data_dir=sys.argv[1])
create_app(settings)

async def start():
    runtime = await Runtime.open(settings)
    await runtime.start_worker()
    await runtime.close()

asyncio.run(start())
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jinja2', 'sqlalchemy',
      'PIL', 'alembic', 'defusedxml', 'xml', 'pixelgate', 'limits', 'tenacity', 'pydantic'))))
"""


def test_the_app_is_built_without_modules_it_does_not_need_yet(tmp_path: object) -> None:
    # no provider key of the caller's: every default instance but the placeholder is keyless
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEY_ENV}
    env = {k: v for k, v in env.items() if not k.startswith("PIXELGATE_")}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "sqlalchemy.orm" in loaded  # the script did load
    assert "pixelgate.providers.placeholder" in loaded
    assert sorted(m for m in NOT_AT_START if m in loaded) == []


_OPENAPI_SCRIPT = """
import json, sys
if sys.argv[2] == "eager":
    import fastapi.openapi.models
import pixelgate.cli
from pixelgate.api.app import create_app
from pixelgate.config import load_settings
from fastapi.openapi import models
app = create_app(load_settings(data_dir=sys.argv[1]))
built_at_start = models.OpenAPI.__pydantic_complete__
document = app.openapi()
print(json.dumps({"built_at_start": built_at_start, "document": document}, sort_keys=True))
"""


def _openapi_of_a_new_process(tmp_path: Path, mode: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    done = subprocess.run(
        [sys.executable, "-c", _OPENAPI_SCRIPT, str(tmp_path / mode), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_fastapi_openapi_models_are_built_for_the_first_document_not_at_start(
    tmp_path: Path,
) -> None:
    lazy = _openapi_of_a_new_process(tmp_path, "lazy")
    eager = _openapi_of_a_new_process(tmp_path, "eager")
    assert eager["built_at_start"] is True  # FastAPI imported first: built as it always was
    assert lazy["built_at_start"] is False
    assert lazy["document"] == eager["document"]
