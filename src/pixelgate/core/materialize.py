"""Bytes in and out of a job: input images, the provider request, stored result images.

Inputs are loaded once per job into a context variable, so every provider request the
job builds (racing builds several) carries them without passing them around. Results
are fetched once (size-capped), decoded and validated (decompression-bomb caps),
converted to the requested format, hashed and stored under their stable key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import structlog

from pixelgate.config import Settings
from pixelgate.core.inputs import INPUT_FIELDS, JobInputs, load_inputs
from pixelgate.core.models import GenerationRequest
from pixelgate.core.records import ClaimedJob, NewImage
from pixelgate.errors import ImageRejected, ProviderError, StorageError
from pixelgate.media.cpu import InlineWork, run_cpu
from pixelgate.media.fetch import SafeFetcher
from pixelgate.media.images import (
    EXTENSIONS,
    ProcessedImage,
    is_small_png,
    process_image,
    process_image_sync,
)
from pixelgate.media.svg import is_svg, process_svg
from pixelgate.observability import tracing
from pixelgate.providers._http import download
from pixelgate.providers.base import HttpClient, ProviderImage, ProviderRequest, ProviderResult
from pixelgate.providers.placeholder import render_placeholder
from pixelgate.storage.base import BlockingWrites, Storage, image_key

__all__ = [
    "DEFAULT_IMAGE_PROVIDER",
    "DEFAULT_IMAGE_TEXT",
    "Materializer",
    "provider_request",
    "render_default_image",
]

log = structlog.get_logger("pixelgate.pipeline")

#: the input images of the job running in this task (set by ``Materializer.load_inputs``)
_JOB_INPUTS: ContextVar[JobInputs | None] = ContextVar("pixelgate_job_inputs", default=None)
#: the provider name a generation answered by the default image shows (seed 001)
DEFAULT_IMAGE_PROVIDER = "default"
DEFAULT_IMAGE_TEXT = "Default Image"


async def render_default_image(width: int, height: int, fmt: str = "png") -> bytes:
    """The placeholder "Default Image" (seed 001) of a size: its one renderer."""
    return await run_cpu(
        render_placeholder,
        DEFAULT_IMAGE_TEXT,
        width=width,
        height=height,
        fmt=fmt,
        seed=0,
        label=DEFAULT_IMAGE_TEXT,
    )


def provider_request(request: GenerationRequest, model: str) -> ProviderRequest:
    """What one provider is asked for ``request``, with the running job's input images."""
    width, height = request.dimensions()
    inputs = _JOB_INPUTS.get() or JobInputs()
    return ProviderRequest(
        prompt=request.prompt,
        model=model,
        negative_prompt=request.negative_prompt,
        n=request.n,
        width=width,
        height=height,
        aspect_ratio=request.aspect_ratio,
        format=request.format,
        quality=request.quality,
        style=request.style,
        seed=request.seed,
        background=request.background,
        reference_image=inputs.reference_image,
        edit_image=inputs.edit_image,
        mask=inputs.mask,
        partial_images=request.partial_images or 0,
        options=dict(request.options),
    )


class Materializer:
    """Loads a job's input images and turns provider answers into stored images."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        fetcher: SafeFetcher,
        http: HttpClient,
    ) -> None:
        self.settings = settings
        self.storage = storage
        # a runtime Protocol check walks the protocol's members: once, not per image
        self._blocking_writes = storage if isinstance(storage, BlockingWrites) else None
        self._inline = InlineWork()
        self.fetcher = fetcher
        self.http = http

    async def load_inputs(self, job: ClaimedJob) -> None:
        """Load the job's input images for this task (read by :func:`provider_request`).

        Raises:
            PixelgateError: an input is unusable (the job fails with its code).
        """
        _JOB_INPUTS.set(None)
        if not any(job.request.get(name) for name in INPUT_FIELDS):
            return
        try:
            request = GenerationRequest.model_validate(job.request)
        except ValueError:
            return  # the executor reports an invalid stored request
        inputs = await load_inputs(
            request,
            account_id=job.account_id,
            storage=self.storage,
            fetcher=self.fetcher,
            settings=self.settings,
        )
        _JOB_INPUTS.set(inputs)

    async def materialize(
        self, job: ClaimedJob, request: GenerationRequest, result: ProviderResult
    ) -> list[NewImage]:
        """Fetch (once, size-capped), decode, validate, convert, hash and store each image."""
        stored: list[NewImage] = []
        for index, image in enumerate(result.images):
            data = await self._image_bytes(image, result)
            stored.append(
                await self.store_image(job, request, data, index, attribution=image.attribution)
            )
        return stored

    async def default_image(self, job: ClaimedJob, request: GenerationRequest) -> NewImage | None:
        """The placeholder "Default Image" (seed 001), stored; None when that fails."""
        width, height = request.dimensions()
        if request.format == "svg":  # the default image is a raster
            request = request.model_copy(update={"format": "png"})
        try:
            data = await render_default_image(width, height, request.format)
            return await self.store_image(
                job,
                request,
                data,
                index=0,
                attribution={"provider": DEFAULT_IMAGE_PROVIDER, "fallback_image": True},
            )
        except (ImageRejected, StorageError) as exc:
            log.warning("default_image_failed", generation_id=job.id, code=exc.code)
            return None

    async def store_image(
        self,
        job: ClaimedJob,
        request: GenerationRequest,
        data: bytes,
        index: int,
        *,
        attribution: dict[str, Any] | None,
    ) -> NewImage:
        """Decode, validate, convert and hash one image, and store it under its stable key.

        SVG (from vector models) is sanitised and kept as SVG, or rasterised when the
        request asks for a raster format; it is never handed to the raster decoder.
        """
        limits: dict[str, Any] = {
            "want_format": request.format,
            "max_bytes": self.settings.max_image_bytes,
            "max_pixels": self.settings.max_image_pixels,
        }

        def key_for(processed: ProcessedImage) -> str:
            return image_key(
                prefix=self.settings.storage_prefix,
                account=job.account_name,
                project=job.project,
                created_at=job.created_at,
                generation_id=job.id,
                index=index,
                ext=EXTENSIONS.get(processed.format, processed.format),  # svg is itself
            )

        svg = is_svg(data) or request.format == "svg"
        if not svg and self._blocking_writes is not None:
            # processed and written in one go: a small PNG on the loop (the two thread
            # hops cost ~12 % of a request's CPU, measured: 22 -> 6 context switches per
            # request), any other in one CPU-pool task (one hop, not two)
            with tracing.span("storage.put") as span:
                write = self._blocking_writes.write_blocking
                if is_small_png(data, request.format) and self._inline.allowed():
                    # only the write is timed: a stalling disk, not the check, pauses it
                    def inline_write(key: str, blob: bytes) -> None:
                        self._inline.run(write, key, blob)

                    processed, key = _process_and_write(inline_write, data, key_for, limits)
                else:
                    processed, key = await run_cpu(_process_and_write, write, data, key_for, limits)
                if span is not None:
                    span.set_attribute("pixelgate.storage_key", key)
        else:
            convert = process_svg if svg else process_image
            processed = await convert(data, **limits)
            key = key_for(processed)
            with tracing.span("storage.put", **{"pixelgate.storage_key": key}):
                await self.storage.put(key, processed.data, processed.content_type)
        return NewImage(
            index=index,
            key=key,
            width=processed.width,
            height=processed.height,
            format=processed.format,
            content_type=processed.content_type,
            bytes=processed.bytes,
            sha256=processed.sha256,
            attribution=attribution,
        )

    async def _image_bytes(self, image: ProviderImage, result: ProviderResult) -> bytes:
        if image.data is not None:
            return image.data
        if image.url is None:
            raise ProviderError(
                "provider returned an image with neither bytes nor URL", code="no_image"
            )
        data, _ = await download(
            self.http, result.model, image.url, max_bytes=self.settings.max_image_bytes
        )
        return data


def _process_and_write(
    write: Callable[[str, bytes], None],
    data: bytes,
    key_for: Callable[[ProcessedImage], str],
    limits: dict[str, Any],
) -> tuple[ProcessedImage, str]:
    """Decode, validate and convert a raster image, then ``write(key, bytes)`` it."""
    processed = process_image_sync(data, **limits)
    key = key_for(processed)
    write(key, processed.data)
    return processed, key
