"""UI parts without a server: charts carry units and time axes; thumbnails keep the aspect."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from pixelgate.config import load_settings
from pixelgate.storage.local import LocalStorage
from pixelgate.ui.charts import Series, bar_chart, line_chart
from pixelgate.ui.thumbs import THUMB_SIZE, thumbnail


def test_line_chart_has_units_time_labels_and_a_legend() -> None:
    start = datetime(2026, 1, 1, 12, 0)
    times = [start + timedelta(minutes=5 * i) for i in range(12)]
    svg = str(line_chart("Success", times, [Series("fast", [100.0] * 12)], unit="%", y_max=100))
    assert "<svg" in svg and "100%" in svg and "12:00" in svg and "time (UTC)" in svg
    assert ">fast<" in svg and "<polyline" in svg


def test_bar_chart_escapes_text_and_says_when_empty() -> None:
    svg = str(bar_chart("<b>spend</b>", [datetime(2026, 1, 1)], [0.0], unit="USD"))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert "no data in this period" in svg


async def test_thumbnail_keeps_the_aspect_and_is_cached(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    storage = LocalStorage(tmp_path / "images")
    buf = io.BytesIO()
    Image.new("RGB", (1200, 600), "red").save(buf, "PNG")
    await storage.put("a/wide.png", buf.getvalue(), "image/png")
    data = await thumbnail(settings, storage, "img_1", "a/wide.png")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP"
        assert im.size == (THUMB_SIZE, THUMB_SIZE // 2)
    await storage.delete("a/wide.png")
    assert await thumbnail(settings, storage, "img_1", "a/wide.png") == data  # from the cache
