"""A line of text drawn from cached glyphs, where Pillow's ``ImageDraw.text`` puts them.

Why not ``ImageDraw.text`` itself: it renders every glyph through FreeType on each call
(loading each glyph for the layout, the bounding box and the drawing) while holding the
GIL: ~40 µs for a 5-character line at 9 px, and the placeholder draws a new prompt on
every image. Pillow keeps no glyph cache, and FreeType's own cache (FTC) is not exposed.
A glyph's mask depends only on the font and the character, so it is rendered once
(``getmask2`` of that character) and blended with ``draw_bitmap`` as ``ImageDraw.text``
does: the line starts at its position rounded to the pixel as FreeType rounds it (x half
up, y half down: its y axis points up), each glyph at the whole pixels of the advances
before it (the fonts are hinted: advances are whole pixels). This is Pillow's basic
layout, which shapes nothing; the result is its drawing to the pixel, except where two
antialiased glyphs overlap: a difference of at most 1 in a few pixels
(tests/unit/test_glyphs.py compares them).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

__all__ = ["draw_line"]

#: glyphs kept (per font object: a font belongs to one thread); each is a few hundred bytes
GLYPHS_CACHED = 2048


def draw_line(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, int, int, int],
) -> None:
    """``draw.text(xy, text, font=font, fill=fill)`` for one line, from cached glyphs."""
    from PIL import ImageFont  # loaded with the placeholder's drawing

    if not isinstance(font, ImageFont.FreeTypeFont) or draw.fontmode != "L":
        draw.text(xy, text, font=font, fill=fill)  # a bitmap font: nothing to cache
        return
    ink = draw._getink(fill)[0]
    x = math.floor(xy[0] + 0.5)
    y = math.ceil(xy[1] - 0.5)
    advance = 0.0
    for char in text:
        mask, (dx, dy), width = _glyph(font, char)
        if mask is not None:
            draw.draw.draw_bitmap((x + int(advance) + dx, y + dy), mask, ink)
        advance += width


@functools.lru_cache(maxsize=GLYPHS_CACHED)
def _glyph(font: ImageFont.FreeTypeFont, char: str) -> tuple[Any, tuple[int, int], float]:
    """The glyph's mask (None when it has no pixels), its offset and its advance."""
    mask, offset = font.getmask2(char, "L")
    width, height = mask.size
    return (mask if width and height else None), offset, font.getlength(char)
