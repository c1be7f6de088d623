"""Native edits and variations with uploaded images: ``POST /v1/generations/edits``.

``multipart/form-data`` with ``image`` (required), ``mask`` (optional, PNG whose
transparent pixels mark the area to change) and ``reference_image`` (optional), plus
the request: either a ``request`` part holding the JSON body of ``POST
/v1/generations``, or its scalar fields as form fields (``prompt``, ``provider``,
``n``…). Without a mask the request is a variation of the image. The answer is the
one of ``POST /v1/generations`` (202, or 200 with ``Prefer: wait=N``).

The same edits by URL need no upload: ``image_url`` / ``mask_url`` in the JSON body of
``POST /v1/generations``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from pixelgate.api.deps import CurrentCaller, IdempotencyKey, RequestId, RuntimeDep
from pixelgate.api.responses import JSONResponse
from pixelgate.api.routes.generations import prefer_wait
from pixelgate.api.schemas import generation_body
from pixelgate.api.uploads import (
    StoredUpload,
    Uploads,
    default_size,
    form_fields,
    form_uploads,
    read_form,
)
from pixelgate.core.models import DEFAULT_SIDE, GenerationRequest
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import ValidationFailed

router = APIRouter(prefix="/v1/generations", tags=["generations"])

FILE_FIELDS = ("image", "mask", "reference_image")
MAX_INT_DIGITS = 20


_BINARY = {"type": "string", "format": "binary"}
_FORM = {
    "type": "object",
    "properties": {
        "image": _BINARY,
        "mask": _BINARY,
        "reference_image": _BINARY,
        "request": {"type": "string", "description": "the other fields, as a JSON object"},
        "prompt": {"type": "string", "minLength": 1},
    },
    "required": ["image"],
}


@router.post(
    "/edits",
    status_code=202,
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM}}}
    },
)
async def create_edit(
    request: Request,
    runtime: RuntimeDep,
    caller: CurrentCaller,
    request_id: RequestId,
    idempotency_key: IdempotencyKey,
    prefer: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    form = await read_form(request, max_image_bytes=runtime.settings.max_image_bytes)
    uploads = Uploads(runtime, caller.account_id)
    async with uploads.until_admitted():
        try:
            body = _request_fields(form_fields(form, skip=FILE_FIELDS), form.get("request"))
            sent = {name: form_uploads(form, name) for name in FILE_FIELDS}
            for name, files in sent.items():
                if len(files) > 1:
                    raise ValidationFailed(name, "give one file")
            if not sent["image"]:
                raise ValidationFailed("image", "field required (the image to edit)")
            # the other fields are checked before any upload is stored
            probe = _validated(_with_upload_keys(body, sent))
            refuse_unsafe_urls(probe, runtime.settings)
            runtime.pipeline.validate(probe)
            stored: dict[str, StoredUpload] = {}
            for name, files in sent.items():
                if files:
                    kind = {"image": "image", "mask": "mask", "reference_image": "reference"}[name]
                    stored[name] = await uploads.add(files[0], field=name, kind=kind)
        finally:
            await form.close()
        image = stored["image"].image
        mask = stored.get("mask")
        if mask is not None and (mask.image.width, mask.image.height) != (
            image.width,
            image.height,
        ):
            raise ValidationFailed(
                "mask", "must have the same size as the image", code="mask_invalid"
            )
        for name, upload in stored.items():
            body[_KEY_FIELDS[name]] = upload.key
        if not any(k in body for k in ("width", "height", "aspect_ratio")):
            body["width"], body["height"] = default_size(
                image.width, image.height, runtime.settings.max_dimension
            )
        result = await runtime.pipeline.admit(
            caller,
            _validated(body),
            source="native",
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
    view = result.generation
    wait_s = prefer_wait(prefer, runtime.settings.max_wait_s)
    if wait_s and not view.terminal:
        view = await runtime.pipeline.wait(view.id, wait_s)
    headers = {"Location": f"/v1/generations/{view.id}"}
    if not result.created:
        headers["Idempotent-Replayed"] = "true"
    if wait_s is not None:
        headers["Preference-Applied"] = f"wait={wait_s:g}"
    status = 200 if view.terminal and (wait_s is not None or not result.created) else 202
    return JSONResponse(generation_body(view), status_code=status, headers=headers)


#: stands for an upload's storage key while the other fields are checked
_PENDING_KEY = "inputs/acct_pending/2000/01/inp_pending.png"
_KEY_FIELDS = {
    "image": "input_image_key",
    "mask": "input_mask_key",
    "reference_image": "input_reference_key",
}


def _with_upload_keys(body: dict[str, Any], sent: dict[str, list[Any]]) -> dict[str, Any]:
    probe = {**body, **{_KEY_FIELDS[name]: _PENDING_KEY for name, files in sent.items() if files}}
    if not any(k in probe for k in ("width", "height", "aspect_ratio")):
        probe["width"] = probe["height"] = DEFAULT_SIDE
    return probe


def _validated(body: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "request"
        raise ValidationFailed(field, str(first["msg"])) from None


#: form fields whose text is a number or a boolean (the JSON model is strict about types)
_INT_FIELDS = frozenset({"n", "width", "height", "seed", "race", "partial_images"})
_BOOL_FIELDS = frozenset({"hedge", "fallback_on_refusal", "fallback_image", "cache"})
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _form_scalar(name: str, text: str) -> Any:
    """A form field's text as the JSON value it stands for; left as text when it is not."""
    value = text.strip()
    if name in _INT_FIELDS and value.lstrip("-").isdigit() and len(value) <= MAX_INT_DIGITS:
        return int(value)
    if name in _BOOL_FIELDS and value.lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.lower()]
    return text


def _request_fields(fields: dict[str, Any], raw: Any) -> dict[str, Any]:
    """The JSON ``request`` part, overlaid with the plain form fields."""
    body: dict[str, Any] = {}
    if raw is not None:
        if not isinstance(raw, str):
            raise ValidationFailed("request", "must be a JSON object (a text part)")
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise ValidationFailed("request", "malformed JSON") from None
        if not isinstance(parsed, dict):
            raise ValidationFailed("request", "must be a JSON object")
        body.update(parsed)
    for name, value in fields.items():
        if name == "request":
            continue
        if name in ("metadata", "options") and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValidationFailed(name, "malformed JSON") from None
        elif name == "providers" and isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, str):
            value = _form_scalar(name, value)
        body[name] = value
    for internal in ("input_image_key", "input_mask_key", "input_reference_key"):
        if internal in body:
            raise ValidationFailed(internal, "set by the upload; send the file instead")
    return body
