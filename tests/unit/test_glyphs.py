"""Text drawn from cached glyphs: Pillow's own drawing, give or take 1 in a few pixels."""

from __future__ import annotations

import random
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont

from pixelgate.providers import _glyphs, placeholder
from pixelgate.providers._glyphs import draw_line

TEXTS = [
    "b1234",
    "A serene mountain landscape",
    "fifty waffles AV To",
    "pixelgate placeholder · seed 1234567 · 64x64",
    "日本語のプロンプト 🎨",
    "edit",
    "",
]


def drawn(mode: str, draw_with: Any, xy: tuple[float, float], text: str, px: int) -> Image.Image:
    img = Image.new(mode, (420, 60), (90, 60, 140, 255) if mode == "RGBA" else (90, 60, 140))
    draw_with(ImageDraw.Draw(img, "RGBA"), xy, text, placeholder._font(px))
    return img


def pillow(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any) -> None:
    draw.text(xy, text, font=font, fill=placeholder._TEXT)


def cached(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any) -> None:
    draw_line(draw, xy, text, font, placeholder._TEXT)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("px", [9, 12, 23])
def test_the_same_pixels_as_pillows_drawing_give_or_take_one(mode: str, px: int) -> None:
    rng = random.Random(px)
    for text in TEXTS:
        for xy in [(10.0, 10.0), (10.5, 10.5), *((rng.uniform(0, 9), rng.uniform(0, 9)),) * 4]:
            ours = drawn(mode, cached, xy, text, px)
            theirs = drawn(mode, pillow, xy, text, px)
            difference = ImageChops.difference(ours, theirs)
            assert max(difference.tobytes(), default=0) <= 1, (text, xy)
            differing = sum(1 for value in difference.convert("L").tobytes() if value)
            assert differing <= 8, (text, xy)  # where two glyphs overlap


def test_a_glyph_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    getmask2 = ImageFont.FreeTypeFont.getmask2

    def counting(self: ImageFont.FreeTypeFont, text: str, *args: Any, **kwargs: Any) -> Any:
        rendered.append(text)
        return getmask2(self, text, *args, **kwargs)

    monkeypatch.setattr(ImageFont.FreeTypeFont, "getmask2", counting)
    _glyphs._glyph.cache_clear()
    for _ in range(3):
        drawn("RGB", cached, (3.0, 4.0), "abba cab", 11)
    assert sorted(rendered) == [" ", "a", "b", "c"]


def test_a_bitmap_font_is_drawn_by_pillow() -> None:
    font = ImageFont.load_default_imagefont()
    ours = Image.new("RGB", (80, 20))
    theirs = ours.copy()
    draw_line(ImageDraw.Draw(ours, "RGBA"), (2.0, 3.0), "b12", font, placeholder._TEXT)
    ImageDraw.Draw(theirs, "RGBA").text((2.0, 3.0), "b12", font=font, fill=placeholder._TEXT)
    assert ours.tobytes() == theirs.tobytes()
    assert ours.getbbox() is not None
