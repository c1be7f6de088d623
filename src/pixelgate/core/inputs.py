"""Input images of a generation: an image to edit, its mask, a reference image.

Uploads are validated and stored *before* admission under
``inputs/<account id>/<yyyy>/<mm>/<inp id>.<ext>``, and the key is recorded in the
request, so a job re-run after a worker restart finds the same bytes. URLs
(``image_url``, ``mask_url``, ``reference_image_url``) are fetched by the worker through
:class:`~pixelgate.media.fetch.SafeFetcher` (public addresses only, size-capped), then
decoded and validated like any image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pixelgate.config import Settings
from pixelgate.core.models import GenerationRequest
from pixelgate.errors import ImageRejected, NotFound, PixelgateError, StorageError, UnsafeURL
from pixelgate.media.fetch import FetchFailed, SafeFetcher
from pixelgate.media.images import EXTENSIONS, ProcessedImage, process_image
from pixelgate.storage.base import Storage, validate_key

__all__ = [
    "INPUT_FIELDS",
    "InputFailed",
    "JobInputs",
    "check_input_owner",
    "load_inputs",
]

INPUT_PREFIX = "inputs"
INPUT_HASH_CHARS = 40
#: request fields that name an input image (a job without any skips the loading)
INPUT_FIELDS = (
    "image_url",
    "mask_url",
    "reference_image_url",
    "input_image_key",
    "input_mask_key",
    "input_reference_key",
)
#: error-code stem of each input, as in ``reference_image_unavailable``
_STEMS = {"image": "input_image", "mask": "mask", "reference": "reference_image"}


class InputFailed(PixelgateError):
    """An input image could not be used; the generation fails with this code."""

    code = "input_unavailable"


@dataclass(frozen=True)
class JobInputs:
    """The bytes handed to the provider as ``edit_image``, ``mask`` and ``reference_image``."""

    edit_image: bytes | None = None
    mask: bytes | None = None
    reference_image: bytes | None = None


def input_key(account_id: str, image: ProcessedImage, now: datetime | None = None) -> str:
    """The storage key of an input of ``account_id``: named by its content.

    The same upload gets the same key, so a retried request (``Idempotency-Key``) is
    the same request.
    """
    now = now or datetime.now(UTC)
    name = f"inp_{image.sha256[:INPUT_HASH_CHARS]}.{EXTENSIONS[image.format]}"
    return validate_key(f"{INPUT_PREFIX}/{account_id}/{now.year:04d}/{now.month:02d}/{name}")


def check_input_owner(key: str, account_id: str) -> None:
    """Raise ``InputFailed`` unless ``key`` is one of ``account_id``'s inputs."""
    if not key.startswith(f"{INPUT_PREFIX}/{account_id}/"):
        raise InputFailed("the uploaded input belongs to another account", code="input_not_found")


async def validate_input(data: bytes, settings: Settings, *, kind: str) -> ProcessedImage:
    """Decode and check an input image (caps of ``settings``); masks become PNG.

    Raises:
        ImageRejected: not a decodable PNG/JPEG/WebP/AVIF/GIF, or over the caps.
    """
    return await process_image(
        data,
        want_format="png" if kind == "mask" else None,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )


async def load_inputs(
    request: GenerationRequest,
    *,
    account_id: str,
    storage: Storage,
    fetcher: SafeFetcher,
    settings: Settings,
) -> JobInputs:
    """Read the stored uploads and fetch the URLs of ``request``.

    Raises:
        InputFailed: ``<input>_unavailable`` (cannot be fetched or read),
            ``<input>_invalid`` (not an acceptable image), ``input_not_found``.
        UnsafeURL: a URL points at a non-public address (code ``unsafe_url``).
    """
    loader = _Loader(account_id, storage, fetcher, settings)
    edit = await loader.load("image", request.input_image_key, request.image_url)
    mask = await loader.load("mask", request.input_mask_key, request.mask_url)
    reference = await loader.load(
        "reference", request.input_reference_key, request.reference_image_url
    )
    if (
        edit is not None
        and mask is not None
        and (edit.width, edit.height)
        != (
            mask.width,
            mask.height,
        )
    ):
        raise InputFailed(
            f"the mask is {mask.width}x{mask.height} but the image is {edit.width}x{edit.height}",
            code="mask_invalid",
        )
    return JobInputs(
        edit_image=edit.data if edit else None,
        mask=mask.data if mask else None,
        reference_image=reference.data if reference else None,
    )


class _Loader:
    def __init__(
        self, account_id: str, storage: Storage, fetcher: SafeFetcher, settings: Settings
    ) -> None:
        self.account_id = account_id
        self.storage = storage
        self.fetcher = fetcher
        self.settings = settings

    async def load(self, kind: str, key: str | None, url: str | None) -> ProcessedImage | None:
        stem = _STEMS[kind]
        if key:
            data = await self._read(stem, key)
        elif url:
            data = await self._fetch(stem, url)
        else:
            return None
        try:
            return await validate_input(data, self.settings, kind=kind)
        except ImageRejected as exc:
            raise InputFailed(f"{stem}: {exc.message}", code=f"{stem}_invalid") from None

    async def _read(self, stem: str, key: str) -> bytes:
        check_input_owner(key, self.account_id)
        try:
            return (await self.storage.get(key)).data
        except (NotFound, StorageError) as exc:
            raise InputFailed(
                f"{stem}: the uploaded input is no longer available ({exc.message})",
                code=f"{stem}_unavailable",
            ) from None

    async def _fetch(self, stem: str, url: str) -> bytes:
        field = "image_url" if stem == "input_image" else f"{stem}_url"
        try:
            result = await self.fetcher.fetch(
                url,
                max_bytes=self.settings.max_image_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                allow_hosts=self.settings.fetch_allow_hosts,
                headers={"Accept": "image/*"},
                what=field,
            )
        except UnsafeURL as exc:
            if exc.code == "unresolvable_host":
                raise InputFailed(exc.message, code=f"{stem}_unavailable") from None
            raise UnsafeURL(exc.message, code="unsafe_url") from None
        except FetchFailed as exc:
            raise InputFailed(
                f"{field}: could not be fetched: {exc.message}", code=f"{stem}_unavailable"
            ) from None
        return result.content
