"""What ``pixelgate serve`` loads before it answers: modules the idle server and its first
API requests do not need stay unloaded until used (each is megabytes resident and
milliseconds of every start; docs/benchmarks.md, "Start and idle memory")."""

from __future__ import annotations

import json
import subprocess
import sys

#: loaded only by what uses them: the web UI's first page (Jinja2), the PostgreSQL
#: dialect on a PostgreSQL database, the placeholder's first image (Pillow's drawing
#: modules and FreeType), the first image with an ICC profile (LittleCMS), the first SVG
#: (the XML parser), Alembic only to migrate an existing database
NOT_AT_START = (
    "jinja2",
    "sqlalchemy.dialects.postgresql",
    "PIL.ImageDraw",
    "PIL.ImageFont",
    "PIL.ImageFilter",
    "PIL.ImageChops",
    "PIL.ImageCms",
    "defusedxml",
    "xml.etree.ElementTree",
    "alembic",
)

_SCRIPT = """
import json, sys
from pixelgate.config import load_settings
from pixelgate.api.app import create_app
from pixelgate.providers.registry import build_providers
import pixelgate.cli
settings = load_settings(data_dir=sys.argv[1])
create_app(settings)
build_providers(settings, None)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jinja2', 'sqlalchemy',
      'PIL', 'alembic', 'defusedxml', 'xml'))))
"""


def test_the_app_is_built_without_modules_it_does_not_need_yet(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "sqlalchemy.orm" in loaded and "PIL.Image" in loaded  # the script did load
    assert sorted(m for m in NOT_AT_START if m in loaded) == []
