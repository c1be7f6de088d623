"""The in-process Python API (seed 002's library use), async and blocking."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

import pixelgate


async def test_async_gateway_generates_and_streams_events(make_settings: Any) -> None:
    settings = make_settings(
        providers={"slowish": {"kind": "placeholder", "latency_ms": 300}},
        routing={"default": ["slowish"]},
    )
    async with pixelgate.Pixelgate(settings) as pg:
        result = await pg.generate("a lighthouse", width=120, height=80, format="webp", seed=3)
        assert result.ok and result.provider == "slowish"
        [image] = result.images
        assert (image.width, image.height, image.format) == (120, 80, "webp")
        assert Image.open(io.BytesIO(image.data)).size == (120, 80)

        gen_id = await pg.submit("a fox", n=2, width=32, height=32)
        types = [event["type"] async for event in pg.events(gen_id)]
        assert types[0] == "queued" and types[-1] == "succeeded" and "progress" in types
        fetched = await pg.get(gen_id)
        assert len(fetched.images) == 2


async def test_failures_come_back_as_results(make_settings: Any) -> None:
    settings = make_settings(
        providers={"nope": {"kind": "placeholder", "fail_rate": 1.0, "fail_kind": "refused"}},
        routing={"default": ["nope"]},
    )
    async with pixelgate.Pixelgate(settings) as pg:
        result = await pg.generate("x")
    assert not result.ok and result.status == "FAILED" and "injected" in (result.error or "")


def test_blocking_generate_writes_a_file(make_settings: Any, tmp_path: Path) -> None:
    result = pixelgate.generate("a red kite", settings=make_settings(), width=64, height=48)
    target = result.images[0].save(tmp_path / "kite.png")
    assert Image.open(target).size == (64, 48)


def test_public_names_are_lazy_and_documented() -> None:
    assert set(pixelgate.__all__) >= {"Pixelgate", "generate", "agenerate", "Settings"}
    assert pixelgate.Pixelgate.__doc__ and pixelgate.generate.__doc__
