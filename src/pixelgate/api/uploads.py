"""Multipart uploads of input images (native edits, OpenAI-compatible edits).

The body is parsed under a total byte cap (Starlette's parser caps fields but not
files); each image is decoded and validated before it is stored under ``inputs/``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pixelgate.api.text import MESSAGE, unstorable_path
from pixelgate.core.inputs import input_key, validate_input
from pixelgate.core.models import MIN_SIDE
from pixelgate.errors import ImageRejected, ValidationFailed
from pixelgate.media.images import ProcessedImage
from pixelgate.runtime import Runtime

__all__ = [
    "StoredUpload",
    "Uploads",
    "default_size",
    "form_uploads",
    "multipart_limit",
    "read_form",
]

MAX_FILES = 20
MAX_FIELDS = 100
MAX_FIELD_BYTES = 256 * 1024
#: room for the text fields and the multipart framing on top of the images
FORM_OVERHEAD_BYTES = 1024 * 1024
#: uploads per request counted in the body cap (image, mask, reference)
UPLOADS_IN_CAP = 3

log = structlog.get_logger("pixelgate.api")


class _TooLarge(Exception):
    pass


class StoredUpload:
    """An uploaded input after validation: its storage key and the decoded facts."""

    def __init__(self, key: str, image: ProcessedImage) -> None:
        self.key = key
        self.image = image


def multipart_limit(max_image_bytes: int) -> int:
    """The largest multipart body accepted: the images counted in the cap plus the fields."""
    return UPLOADS_IN_CAP * max_image_bytes + FORM_OVERHEAD_BYTES


async def read_form(request: Request, *, max_image_bytes: int) -> FormData:
    """Parse a ``multipart/form-data`` body, refusing one larger than the caps allow.

    Raises:
        ValidationFailed: not multipart, malformed, or too large (``upload_too_large``).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValidationFailed(
            "body",
            "send multipart/form-data (image, mask and the other fields)",
            code="unsupported_media_type",
        )
    limit = multipart_limit(max_image_bytes)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ValidationFailed("body", f"larger than {limit} bytes", code="upload_too_large")
    parser = MultiPartParser(
        request.headers,
        _capped(request.stream(), limit),
        max_files=MAX_FILES,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        return await parser.parse()
    except _TooLarge:
        raise ValidationFailed(
            "body", f"larger than {limit} bytes", code="upload_too_large"
        ) from None
    except MultiPartException as exc:
        raise ValidationFailed("body", exc.message, code="invalid_multipart") from None


def form_uploads(form: FormData, *names: str) -> list[UploadFile]:
    """The files sent under any of ``names`` (``image``, ``image[]``, ``image[0]``…), in order."""
    found: list[UploadFile] = []
    for key, value in form.multi_items():
        base = key.split("[", 1)[0]
        if base in names:
            if not isinstance(value, UploadFile):
                raise ValidationFailed(key, "must be a file upload")
            found.append(value)
    return found


def form_fields(form: FormData, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The text fields of a form (repeated names become lists)."""
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile) or key.split("[", 1)[0] in skip:
            continue
        name = key.removesuffix("[]")
        if unstorable_path(value) is not None or unstorable_path(key) is not None:
            raise ValidationFailed(name, MESSAGE)
        if name in fields:
            current = fields[name]
            fields[name] = [*current, value] if isinstance(current, list) else [current, value]
        else:
            fields[name] = [value] if key.endswith("[]") else value
    return fields


class Uploads:
    """The input images of one request: validated, stored, and removed again when the
    request is refused (``until_admitted``), so a refused request leaves nothing behind.

    Inputs are named by their content: an object that was already stored (the same image
    uploaded before) is never removed.
    """

    def __init__(self, runtime: Runtime, account_id: str) -> None:
        self._runtime = runtime
        self._account_id = account_id
        self._created: list[str] = []

    async def add(self, upload: UploadFile, *, field: str, kind: str) -> StoredUpload:
        """Read, validate and store one uploaded image.

        Raises:
            ValidationFailed: the file is empty, too large or not an acceptable image.
        """
        settings, storage = self._runtime.settings, self._runtime.storage
        cap = settings.max_image_bytes
        data = await upload.read(cap + 1)
        if len(data) > cap:
            raise ValidationFailed(field, f"larger than {cap} bytes", code="image_too_large")
        if not data:
            raise ValidationFailed(field, "empty file", code="unsupported_image")
        try:
            image = await validate_input(data, settings, kind=kind)
        except ImageRejected as exc:
            raise ValidationFailed(field, exc.message, code=exc.code) from None
        key = input_key(self._account_id, image)
        if not await storage.exists(key):
            await storage.put(key, image.data, image.content_type)
            self._created.append(key)
        return StoredUpload(key, image)

    async def discard(self) -> None:
        """Remove what this request stored (best effort: a leftover is only unused space)."""
        created, self._created = self._created, []
        for key in created:
            try:
                await self._runtime.storage.delete(key)
            except Exception:  # the refusal is what the caller must see
                log.warning("upload_not_removed", key=key, exc_info=True)

    @asynccontextmanager
    async def until_admitted(self) -> AsyncIterator[Uploads]:
        """Inside: store the uploads and admit the request; a refusal removes them again."""
        try:
            yield self
        except BaseException:
            await self.discard()
            raise


def default_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The output size of an edit with no size given: the input's, scaled into ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(MIN_SIDE, int(width * scale)), max(MIN_SIDE, int(height * scale))


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        yield chunk
