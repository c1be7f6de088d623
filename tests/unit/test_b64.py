"""Base64 of whole images without holding the event loop (OpenAI-compatible answers)."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from pixelgate.media.cpu import B64_CHUNK, b64encode_text


@pytest.mark.parametrize(
    "size", [0, 1, 2, 3, B64_CHUNK - 1, B64_CHUNK, B64_CHUNK + 1, 3 * B64_CHUNK + 2]
)
async def test_the_chunked_encoding_is_the_plain_one(size: int) -> None:
    data = os.urandom(size)
    assert await b64encode_text(data) == base64.b64encode(data).decode("ascii")


async def test_other_tasks_run_while_a_large_image_is_encoded() -> None:
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await b64encode_text(os.urandom(8 * B64_CHUNK))
    during = ticks - before
    running = False
    await task
    assert during >= 7  # the loop ran between (nearly) every two chunks
