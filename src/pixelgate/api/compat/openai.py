"""OpenAI-compatible Images API: ``POST /v1/images/generations`` and ``/v1/images/edits``.

Request and response shapes follow OpenAI's (``provider-specs/openai-openapi.yaml``)
so the official ``openai`` SDK works unchanged with ``base_url=<pixelgate>/v1`` and
a pixelgate API key. ``model`` names a route: an alias from ``[aliases]``, a provider
instance (``placeholder``), ``provider/model`` (``openai/gpt-image-1``,
``replicate/google/nano-banana``) or a bare model a configured provider offers
(``gpt-image-1``). Both routes wait for the job (``sync_timeout_s``; past it 504, and
the job carries on), or stream OpenAI's events (``stream: true``): partial images as
the provider sends them, then the finished images. Errors use OpenAI's envelope; answers
that a retry would not change carry ``x-should-retry: false`` so the SDK does not re-run
a generation.
See ``docs/api-openai.md``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from pixelgate.api.deps import CurrentCaller, IdempotencyKey, RequestId, RuntimeDep
from pixelgate.api.errors import CODE_STATUS
from pixelgate.api.hot import HotRequest, hot_route
from pixelgate.api.responses import JSONResponse
from pixelgate.api.uploads import Uploads, default_size, form_fields, form_uploads, read_form
from pixelgate.core.bounds import MAX_TEXT_LENGTH, URL_PATTERN, BoundedJson, ShortText
from pixelgate.core.event_stream import follow_events
from pixelgate.core.models import (
    MAX_PROVIDERS,
    PROJECT_PATTERN,
    EventView,
    GenerationRequest,
    GenerationView,
    Status,
)
from pixelgate.core.partials import PARTIAL_IMAGE
from pixelgate.core.pipeline import AdmitResult, Caller
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import NotFound, StorageError, ValidationFailed
from pixelgate.media.cpu import b64encode_text
from pixelgate.media.fetch import MAX_URL_LENGTH
from pixelgate.providers.registry import ProviderSet
from pixelgate.runtime import Runtime

router = APIRouter(prefix="/v1/images", tags=["openai"])

__all__ = ["ImagesRequest", "resolve_model", "router"]

MAX_N = 10
#: the image to edit plus one reference (OpenAI takes up to 16 for its own models)
MAX_EDIT_IMAGES = 2
MAX_ALIAS_DEPTH = 8
GENERATION_HEADER = "X-Pixelgate-Generation-Id"
NO_RETRY = {"x-should-retry": "false"}
#: the stored error codes of a failed generation that are the caller's to fix
_CLIENT_CODES = frozenset(
    {
        "unsafe_url",
        "input_not_found",
        "input_image_unavailable",
        "input_image_invalid",
        "mask_unavailable",
        "mask_invalid",
        "reference_image_unavailable",
        "reference_image_invalid",
        "invalid_request",
        "provider_invalid_request",
    }
)
_ECHO_QUALITY = frozenset({"low", "medium", "high", "standard", "hd"})


class ImagesRequest(BaseModel):
    """OpenAI's image request fields; another one is refused as OpenAI refuses it (400
    ``invalid_request_error`` naming the parameter).

    pixelgate's own fields may be added (``extra_body`` in the SDK): ``seed``,
    ``negative_prompt``, ``providers``, ``project``, ``metadata``, ``webhook_url``,
    ``reference_image_url``. ``moderation`` and ``input_fidelity`` are accepted and left
    to the provider's defaults.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH)
    model: ShortText | None = None
    n: int | None = Field(None, ge=1, le=MAX_N)
    size: str | None = Field(None, pattern=r"^(auto|[0-9]{1,5}[xX][0-9]{1,5})$")
    quality: ShortText | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "jpg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["auto", "transparent", "opaque"] | None = None
    style: ShortText | None = None
    user: ShortText | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    moderation: Literal["auto", "low"] | None = None
    input_fidelity: Literal["high", "low"] | None = None

    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = Field(None, max_length=MAX_TEXT_LENGTH)
    providers: list[ShortText] | None = Field(None, max_length=MAX_PROVIDERS)
    project: str | None = Field(None, pattern=PROJECT_PATTERN)
    metadata: BoundedJson | None = None
    webhook_url: str | None = Field(None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
    reference_image_url: str | None = Field(
        None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN
    )


def _request_body(media_type: str, files: tuple[str, ...] = ()) -> dict[str, Any]:
    """``openapi_extra`` documenting the body these routes read by hand."""
    schema = ImagesRequest.model_json_schema()
    if files:
        binary = {"type": "string", "format": "binary"}
        schema["properties"] = {**schema["properties"], **dict.fromkeys(files, binary)}
        schema["required"] = [*schema.get("required", []), files[0]]
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


#: the answer: OpenAI's images response, or with ``stream: true`` server-sent events
_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The images (JSON), or with stream: true their events (SSE)",
        "content": {
            "application/json": {},
            # each event: `event: image_generation.partial_image|completed`, `data: {json}`
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                }
            },
        },
    }
}


async def create_image(
    request: Request,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    request_id: RequestId,
    idempotency_key: IdempotencyKey,
) -> Response:
    return await _create(runtime, caller, await request.body(), request_id, idempotency_key)


async def create_image_fast(request: HotRequest) -> Response:
    """``create_image`` for the usual request (see ``api/hot.py``)."""
    return await _create(
        request.runtime, request.caller, request.body, request.request_id, request.idempotency_key
    )


async def _create(
    runtime: Runtime,
    caller: Caller,
    raw_body: bytes,
    request_id: str,
    idempotency_key: str | None,
) -> Response:
    try:
        raw = json.loads(raw_body)
    except ValueError:
        raise ValidationFailed("body", "malformed JSON") from None
    body = _parse(raw if isinstance(raw, dict) else {"prompt": None})
    generation = _generation_request(runtime, body, extra={}, size_default=None)
    result = await _admit(runtime, caller, generation, request_id, idempotency_key)
    return await _answer(runtime, result, body, "generation")


router.add_api_route(
    "/generations",
    create_image,
    methods=["POST"],
    responses=_ANSWER,
    openapi_extra=_request_body("application/json"),
    route_class_override=hot_route(create_image_fast),
)


@router.post(
    "/edits",
    responses=_ANSWER,
    openapi_extra=_request_body("multipart/form-data", ("image", "mask")),
)
async def edit_image(
    request: Request,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    request_id: RequestId,
    idempotency_key: IdempotencyKey,
) -> Response:
    form = await read_form(request, max_image_bytes=runtime.settings.max_image_bytes)
    uploads = Uploads(runtime, caller.account_id)
    async with uploads.until_admitted():
        try:
            body = _parse(form_fields(form, skip=("image", "mask")))
            images = form_uploads(form, "image")
            masks = form_uploads(form, "mask")
            if not images:
                raise ValidationFailed("image", "field required (the image to edit)")
            if len(images) > MAX_EDIT_IMAGES:
                raise ValidationFailed(
                    "image", f"at most {MAX_EDIT_IMAGES} images (the image to edit and a reference)"
                )
            if len(masks) > 1:
                raise ValidationFailed("mask", "give one mask")
            edit = await uploads.add(images[0], field="image", kind="image")
            extra: dict[str, Any] = {"input_image_key": edit.key}
            if len(images) > 1:
                reference = await uploads.add(images[1], field="image", kind="reference")
                extra["input_reference_key"] = reference.key
            if masks:
                mask = await uploads.add(masks[0], field="mask", kind="mask")
                if (mask.image.width, mask.image.height) != (edit.image.width, edit.image.height):
                    raise ValidationFailed("mask", "must have the same size as the image")
                extra["input_mask_key"] = mask.key
        finally:
            await form.close()
        size_default = default_size(
            edit.image.width, edit.image.height, runtime.settings.max_dimension
        )
        generation = _generation_request(runtime, body, extra=extra, size_default=size_default)
        result = await _admit(runtime, caller, generation, request_id, idempotency_key)
    return await _answer(runtime, result, body, "edit")


def resolve_model(
    name: str | None, aliases: dict[str, str], providers: ProviderSet
) -> tuple[str | None, str | None]:
    """``(provider, model)`` named by an OpenAI ``model`` value; ``(None, None)``: the chain.

    Raises:
        NotFound: no alias, provider or provider model has that name (``model_not_found``).
    """
    if not name:
        return None, None
    seen: set[str] = set()
    while name in aliases:
        if name in seen or len(seen) >= MAX_ALIAS_DEPTH:
            raise ValidationFailed("model", f"alias {name!r} refers to itself")
        seen.add(name)
        name = aliases[name]
    if name in providers:
        return name, None
    head, slash, rest = name.partition("/")
    if slash and head in providers:
        return head, rest or None
    owner = providers.owner(name)
    if owner is not None:
        return owner.name, name
    raise NotFound(
        f"The model '{name}' does not exist: use an alias, a provider name or provider/model",
        code="model_not_found",
    )


def _parse(raw: dict[str, Any]) -> ImagesRequest:
    try:
        return ImagesRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = "field required" if first.get("type") == "missing" else str(first["msg"])
        if first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {field}"
        raise ValidationFailed(field, message) from None


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    width, x, height = value.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit()):
        raise ValidationFailed("size", "must be 'auto' or WIDTHxHEIGHT, like 1024x1024")
    return int(width), int(height)


def _generation_request(
    runtime: Runtime,
    body: ImagesRequest,
    *,
    extra: dict[str, Any],
    size_default: tuple[int, int] | None,
) -> GenerationRequest:
    provider, model = resolve_model(body.model, runtime.settings.aliases, runtime.providers)
    size = _size(body.size) or size_default
    options: dict[str, Any] = {}
    if body.output_compression is not None:
        options["output_compression"] = body.output_compression
    fields: dict[str, Any] = {
        "prompt": body.prompt,
        "provider": provider,
        "providers": body.providers if provider is None else None,
        "model": model,
        "n": body.n or 1,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "format": body.output_format or "png",
        "quality": None if body.quality in (None, "auto") else body.quality,
        "style": body.style,
        "background": body.background,
        "seed": body.seed,
        "negative_prompt": body.negative_prompt,
        "project": body.project,
        "webhook_url": body.webhook_url,
        "reference_image_url": body.reference_image_url,
        "metadata": {
            **(body.metadata or {}),
            **({"user": body.user} if body.user else {}),
            **({"requested_model": body.model} if body.model else {}),
        },
        "options": options,
        # previews only make sense on a stream (as at OpenAI)
        "partial_images": body.partial_images if body.stream else None,
        **extra,
    }
    try:
        return GenerationRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(field, str(first["msg"])) from None


async def _admit(
    runtime: Runtime,
    caller: Caller,
    generation: GenerationRequest,
    request_id: str,
    idempotency_key: str | None,
) -> AdmitResult:
    refuse_unsafe_urls(generation, runtime.settings)
    return await runtime.pipeline.admit(
        caller,
        generation,
        source="openai",
        idempotency_key=idempotency_key,
        request_id=request_id,
    )


async def _answer(
    runtime: Runtime,
    result: AdmitResult,
    body: ImagesRequest,
    kind: Literal["generation", "edit"],
) -> Response:
    """The OpenAI-shaped answer: streamed events, or the images once the job has ended."""
    view = result.generation
    if body.stream:
        return EventSourceResponse(
            _stream(runtime, view.id, body, kind), headers={GENERATION_HEADER: view.id}
        )
    if not view.terminal:
        view = await runtime.pipeline.wait(view.id, runtime.settings.sync_timeout_s)
    headers = {GENERATION_HEADER: view.id}
    if view.status != Status.SUCCEEDED or not view.images:
        return _failure(runtime, view, headers)
    return JSONResponse(await _images_body(runtime, view, body), headers=headers)


def _response_format(body: ImagesRequest) -> str:
    if body.response_format:
        return body.response_format
    # DALL·E answered with URLs by default; GPT image models always with base64
    return "url" if (body.model or "").startswith("dall-e") else "b64_json"


async def _images_body(
    runtime: Runtime, view: GenerationView, body: ImagesRequest
) -> dict[str, Any]:
    as_url = _response_format(body) == "url"
    data: list[dict[str, Any]] = []
    for image in view.images:
        if as_url:
            data.append({"url": image.url})
        else:
            stored = await runtime.storage.get(image.key)
            data.append({"b64_json": await b64encode_text(stored.data)})
    first = view.images[0]
    out: dict[str, Any] = {
        "created": int(view.created_at.timestamp()),
        "data": data,
        "output_format": first.format,
        "size": f"{first.width}x{first.height}",
    }
    if body.background in ("transparent", "opaque"):
        out["background"] = body.background
    if body.quality in _ECHO_QUALITY:
        out["quality"] = body.quality
    return out


def _failure(runtime: Runtime, view: GenerationView, headers: dict[str, str]) -> JSONResponse:
    headers = {**headers, **NO_RETRY, "Location": f"/v1/generations/{view.id}"}
    if not view.terminal:
        message = (
            f"the image was not ready within {runtime.settings.sync_timeout_s:g} s; the job "
            f"carries on as {view.id} (GET /v1/generations/{view.id})"
        )
        return JSONResponse(_error(message, "server_error", "timeout"), 504, headers=headers)
    code = view.error_code or ("canceled" if view.status == Status.CANCELED else "provider_error")
    message = view.error_message or f"generation {view.id} ended {view.status.value}"
    if code == "content_refused":
        # OpenAI's own answer to a safety refusal
        return JSONResponse(
            _error(message, "image_generation_user_error", "moderation_blocked"),
            400,
            headers=headers,
        )
    status = 400 if code in _CLIENT_CODES else CODE_STATUS.get(code, 502)
    error_type = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(_error(message, error_type, code), status, headers=headers)


def _error(message: str, error_type: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def _stream(
    runtime: Runtime, generation_id: str, body: ImagesRequest, kind: str
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's streaming events: a ``…partial_image`` event for each preview the provider
    sends, as it comes, then one ``…completed`` event per image when the job ends (or an
    ``error`` event). Within ``sync_timeout_s``, like the answer without a stream.
    """
    prefix = "image_generation" if kind == "generation" else "image_edit"
    deadline = time.monotonic() + runtime.settings.sync_timeout_s
    async for event in follow_events(
        runtime.services.records, runtime.bus, generation_id, poll_s=1.0, deadline=deadline
    ):
        if event.type == PARTIAL_IMAGE:
            partial = await _partial_payload(runtime, event, body, prefix)
            if partial is not None:
                yield {"event": partial["type"], "data": json.dumps(partial)}
    view = await runtime.services.records.get_generation(generation_id)
    if view.status != Status.SUCCEEDED or not view.images:
        failure = _failure(runtime, view, {})
        yield {"event": "error", "data": bytes(failure.body).decode()}
        return
    images = await _images_body(
        runtime, view, body.model_copy(update={"response_format": "b64_json"})
    )
    for item in images["data"]:
        payload = {
            "type": f"{prefix}.completed",
            "b64_json": item.get("b64_json"),
            "created_at": images["created"],
            "size": images["size"],
            **_echo(body),
            "output_format": images["output_format"],
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "total_tokens": 0,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
            },
        }
        yield {"event": f"{prefix}.completed", "data": json.dumps(payload)}
        await asyncio.sleep(0)


async def _partial_payload(
    runtime: Runtime, event: EventView, body: ImagesRequest, prefix: str
) -> dict[str, Any] | None:
    """``ImageGenPartialImageEvent`` (``ImageEdit…``) of a ``partial_image`` event."""
    try:
        stored = await runtime.storage.get(str(event.data["key"]))
    except (KeyError, NotFound, StorageError):
        return None  # a preview that is gone is not worth failing the stream for
    return {
        "type": f"{prefix}.partial_image",
        "b64_json": await b64encode_text(stored.data),
        "created_at": int(event.created_at.timestamp()),
        "size": body.size or "auto",
        **_echo(body),
        "output_format": event.data.get("format", "png"),
        "partial_image_index": int(event.data.get("index", 0)),
    }


def _echo(body: ImagesRequest) -> dict[str, str]:
    """The request's quality and background as OpenAI's stream events repeat them."""
    return {
        "quality": body.quality if body.quality in _ECHO_QUALITY else "auto",
        "background": body.background or "auto",
    }
