"""The OpenAI Images API's bodies as the adapter reads them, and small encoders of what
it sends (PROVIDERS.md §1)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel

from pixelgate.providers._shapes import sniff_image_type


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OutputDetails(BaseModel):
    image_tokens: int | None = None


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_details: OutputDetails | None = None


class ImagesResponse(BaseModel):
    created: int | None = None
    data: list[ImageData] | None = None
    output_format: str | None = None
    usage: Usage | None = None


class ErrorBody(BaseModel):
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class StreamEvent(BaseModel):
    """``ImageGen…Event`` / ``ImageEdit…Event`` of a streamed answer (or an error)."""

    type: str | None = None
    b64_json: str | None = None
    created_at: int | None = None
    output_format: str | None = None
    partial_image_index: int | None = None
    usage: Usage | None = None
    error: ErrorBody | None = None


def form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def preview_bytes(data: str | None) -> bytes | None:
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def extension(data: bytes) -> str:
    return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
        sniff_image_type(data), "png"
    )
