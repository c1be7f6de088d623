"""The in-process Python API: the whole pipeline without an HTTP server (seed 002's library use).

import pixelgate

result = pixelgate.generate("a lighthouse at dusk", width=768, height=512)
result.images[0].save("lighthouse.png")

async with pixelgate.Pixelgate() as pg:
    result = await pg.generate("a lighthouse at dusk", provider="openai")
    async for event in pg.events(result.id):
        ...
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelgate.config import Settings, load_settings
from pixelgate.core.event_stream import follow_events
from pixelgate.core.models import GenerationRequest, GenerationView
from pixelgate.runtime import Runtime

__all__ = ["GeneratedImage", "GenerationResult", "Pixelgate", "agenerate", "generate"]

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class GeneratedImage:
    """One stored image with its bytes."""

    key: str
    url: str
    width: int
    height: int
    format: str
    sha256: str
    data: bytes

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.data)
        return target


@dataclass
class GenerationResult:
    """A generation as the Python API returns it."""

    id: str
    status: str
    provider: str | None
    model: str | None
    error: str | None
    images: list[GeneratedImage] = field(default_factory=list)
    raw: GenerationView | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"


class Pixelgate:
    """An in-process gateway. Use as an async context manager (or call ``open``/``close``).

    Args:
        settings: full settings; by default they are loaded like the CLI does
            (defaults < ``PIXELGATE_CONFIG`` file < environment) with ``overrides`` on top.
        account: the account charged (created if missing); the admin account by default.
    """

    def __init__(
        self, settings: Settings | None = None, *, account: str | None = None, **overrides: Any
    ) -> None:
        self.settings = settings or load_settings(**overrides)
        self.account = account
        self._runtime: Runtime | None = None

    async def open(self) -> Pixelgate:
        if self._runtime is None:
            self._runtime = await Runtime.open(self.settings)
            if self._runtime.data_dir_created:
                from pixelgate.datadir import data_dir_notice

                print(data_dir_notice(self.settings), file=sys.stderr)
            await self._runtime.start_worker()
        return self

    async def close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
            self._runtime = None

    async def __aenter__(self) -> Pixelgate:
        return await self.open()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("Pixelgate is not open; use `async with Pixelgate() as pg:`")
        return self._runtime

    async def submit(self, prompt: str, **params: Any) -> str:
        """Queue a generation; returns its id. ``params`` are the native request fields."""
        request = GenerationRequest.model_validate({"prompt": prompt, **params})
        caller = await self.runtime.local_caller(self.account)
        result = await self.runtime.pipeline.admit(caller, request, source="python")
        return result.generation.id

    async def generate(
        self, prompt: str, *, timeout: float = DEFAULT_TIMEOUT_S, **params: Any
    ) -> GenerationResult:
        """Generate and wait for the result (``timeout`` seconds at most)."""
        gen_id = await self.submit(prompt, **params)
        view = await self.runtime.pipeline.wait(gen_id, timeout)
        return await self._result(view)

    async def get(self, generation_id: str) -> GenerationResult:
        return await self._result(await self.runtime.store.get_generation(generation_id))

    async def events(self, generation_id: str) -> AsyncIterator[dict[str, Any]]:
        """Progress events until the generation ends (seed 002's streaming)."""
        async for event in follow_events(self.runtime.store, self.runtime.bus, generation_id):
            yield {"id": event.id, "type": event.type, **event.data}

    async def _result(self, view: GenerationView) -> GenerationResult:
        images = []
        for image in view.images:
            obj = await self.runtime.storage.get(image.key)
            images.append(
                GeneratedImage(
                    key=image.key,
                    url=image.url,
                    width=image.width,
                    height=image.height,
                    format=image.format,
                    sha256=image.sha256,
                    data=obj.data,
                )
            )
        return GenerationResult(
            id=view.id,
            status=view.status.value,
            provider=view.provider,
            model=view.model,
            error=view.error_message,
            images=images,
            raw=view,
        )


async def agenerate(
    prompt: str, *, settings: Settings | None = None, **params: Any
) -> GenerationResult:
    """One-shot async generation with a temporary in-process gateway."""
    async with Pixelgate(settings) as pg:
        return await pg.generate(prompt, **params)


def generate(prompt: str, *, settings: Settings | None = None, **params: Any) -> GenerationResult:
    """One-shot blocking generation (runs its own event loop)."""
    return asyncio.run(agenerate(prompt, settings=settings, **params))
