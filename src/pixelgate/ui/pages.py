"""The user's pages: sign-in, generate, gallery, one generation and the account.

Every read and write goes through the same store and pipeline calls as the JSON API
(often the API's own route function), so the UI cannot drift from it.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from pixelgate.api.deps import caller_for_hash
from pixelgate.api.responses import JSONResponse
from pixelgate.api.routes import account as account_routes
from pixelgate.api.routes.providers import provider_body
from pixelgate.api.schemas import generation_body
from pixelgate.api.uploads import Uploads, form_uploads
from pixelgate.core.keys import hash_key
from pixelgate.core.models import GenerationRequest, Status
from pixelgate.core.urls import refuse_unsafe_urls
from pixelgate.errors import AuthenticationFailed, ValidationFailed
from pixelgate.providers.base import Health
from pixelgate.runtime import Runtime
from pixelgate.ui.auth import PostingUser, User, require_csrf
from pixelgate.ui.charts import bar_chart
from pixelgate.ui.reads import GalleryFilter, gallery_page
from pixelgate.ui.render import SECURITY_HEADERS, UIRoute, render
from pixelgate.ui.session import (
    clear_session,
    new_session,
    read_session,
    write_session,
)
from pixelgate.ui.thumbs import thumbnail

router = APIRouter(route_class=UIRoute, include_in_schema=False)

GALLERY_PAGE = 24
USAGE_DAYS = 30
MAX_KEY_LENGTH = 512
#: the generate form's text fields, sent on as they are
TEXT_FIELDS = ("prompt", "negative_prompt", "provider", "model", "aspect_ratio", "template")
INT_FIELDS = ("n", "seed")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


# Sign-in -----------------------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def ui_home() -> RedirectResponse:
    return RedirectResponse("/ui/generate", status_code=307)


@router.get("/ui/login")
async def login_page(request: Request) -> Response:
    settings = _runtime(request).settings
    session = read_session(request, settings) or new_session()
    response = render(request, "login.html", {"csrf": session.csrf, "user": None})
    write_session(response, request, settings, session)
    return response


@router.post("/ui/login")
async def login(request: Request) -> Response:
    settings = _runtime(request).settings
    session = read_session(request, settings)
    await require_csrf(request, session)
    form = await request.form()
    key = form.get("api_key")
    key = key.strip() if isinstance(key, str) else ""
    try:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise AuthenticationFailed("enter an API key")
        key_hash = hash_key(key)
        await caller_for_hash(request, key_hash)
    except AuthenticationFailed as exc:
        assert session is not None
        context = {"csrf": session.csrf, "user": None, "error": exc.message}
        return render(request, "login.html", context, status=401)
    response = _see_other("/ui/generate")
    write_session(response, request, settings, new_session(key_hash))  # a fresh CSRF token
    return response


@router.get("/ui/logout")
async def logout_page(request: Request, user: User) -> Response:
    return render(request, "logout.html", {"user": user, "csrf": user.csrf})


@router.post("/ui/logout")
async def logout(request: Request, _user: PostingUser) -> Response:
    response = _see_other("/ui/login")
    clear_session(response, request)
    return response


# Generate ----------------------------------------------------------------------------------


def _catalog(runtime: Runtime) -> list[dict[str, Any]]:
    unchecked = Health(healthy=True, status="unchecked")
    return [provider_body(p, unchecked) for p in runtime.providers.configured()]


@router.get("/ui/generate")
async def generate_page(request: Request, user: User) -> Response:
    runtime = _runtime(request)
    templates = await runtime.services.records.list_templates(user.caller.account_id)
    catalog = _catalog(runtime)
    return render(
        request,
        "generate.html",
        {
            "user": user,
            "csrf": user.csrf,
            "catalog": catalog,
            "catalog_json": json.dumps(catalog),
            "templates": templates,
            "formats": ["png", "jpeg", "webp"],
            "max_n": runtime.settings.max_n,
        },
    )


async def _form_request(request: Request) -> tuple[dict[str, Any], Any]:
    """The generate form as a request body, and the uploaded reference image (if any)."""
    form = await request.form()
    body: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            body[name] = value.strip()
    for name in INT_FIELDS:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            if not value.strip().isdigit():
                raise ValidationFailed(name, "must be a whole number")
            body[name] = int(value)
    size = form.get("size")
    if isinstance(size, str) and size.strip() and "aspect_ratio" not in body:
        width, _, height = size.strip().partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ValidationFailed("size", "must be WIDTHxHEIGHT")
        body["width"], body["height"] = int(width), int(height)
    fmt = form.get("format")
    if isinstance(fmt, str) and fmt:
        body["format"] = fmt
    uploads = [u for u in form_uploads(form, "reference_image") if u.filename]
    return body, uploads[0] if uploads else None


def _validated(body: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(where, str(first["msg"])) from None


@router.post("/ui/estimate")
async def estimate(request: Request, user: PostingUser) -> Response:
    """The cost before submit: ``POST /v1/estimate``'s own function on the form's fields."""
    body, _ = await _form_request(request)
    runtime = _runtime(request)
    return await account_routes.estimate(_validated(body), runtime, user.caller)


@router.post("/ui/generate")
async def generate(request: Request, user: PostingUser) -> Response:
    """Admit the form's request (reference image stored first); JSON for the page's script."""
    runtime = _runtime(request)
    body, reference = await _form_request(request)
    uploads = Uploads(runtime, user.caller.account_id)
    async with uploads.until_admitted():  # a refused request leaves no upload behind
        if reference is not None:
            # the other fields are checked before the upload is stored
            refuse_unsafe_urls(_validated(body), runtime.settings)
            stored = await uploads.add(reference, field="reference_image", kind="reference")
            body["input_reference_key"] = stored.key
        generation = _validated(body)
        refuse_unsafe_urls(generation, runtime.settings)
        result = await runtime.pipeline.admit(
            user.caller, generation, source="ui", request_id=request.state.request_id
        )
    return JSONResponse(generation_body(result.generation), status_code=202)


# Gallery -----------------------------------------------------------------------------------


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(field, "not a calendar date (YYYY-MM-DD)") from None


@router.get("/ui/gallery")
async def gallery(
    request: Request,
    user: User,
    status: Status | None = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    approval: Annotated[str | None, Query(pattern="^(pending|approved|rejected)?$")] = None,
    date_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    runtime = _runtime(request)
    flt = GalleryFilter(
        status=status,
        provider=provider or None,
        approval=approval or None,
        date_from=_day(date_from, "from"),
        date_to=_day(date_to, "to"),
    )
    views, next_cursor = await gallery_page(
        runtime.services.records,
        account_id=None if user.caller.is_admin else user.caller.account_id,
        flt=flt,
        cursor=cursor,
        per_page=GALLERY_PAGE,
    )
    query = {
        k: v
        for k, v in {
            "status": status.value if status else None,
            "provider": provider,
            "approval": approval,
            "from": date_from,
            "to": date_to,
        }.items()
        if v
    }
    return render(
        request,
        "gallery.html",
        {
            "user": user,
            "csrf": user.csrf,
            "views": views,
            "next_cursor": next_cursor,
            "query": query,
            "statuses": [s.value for s in Status],
            "providers": runtime.providers.names(),
        },
    )


@router.get("/ui/thumbs/{image_id}")
async def thumb(image_id: str, request: Request, user: User) -> Response:
    runtime = _runtime(request)
    account = None if user.caller.is_admin else user.caller.account_id
    image, _ = await runtime.services.records.get_image(image_id, account_id=account)
    data = await thumbnail(runtime.settings, runtime.storage, image.id, image.key)
    return Response(
        data,
        media_type="image/webp",
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


# One generation -------------------------------------------------------------------------------


@router.get("/ui/generations/{generation_id}")
async def generation_page(generation_id: str, request: Request, user: User) -> Response:
    runtime = _runtime(request)
    account = None if user.caller.is_admin else user.caller.account_id
    view = await runtime.services.records.get_generation(generation_id, account_id=account)
    events = await runtime.services.records.events_after(generation_id, 0)
    links = await runtime.services.records.list_links(generation_id, account_id=account)
    deliveries = await runtime.services.records.list_webhook_deliveries(
        account_id=account, generation_id=generation_id
    )
    body = generation_body(view)
    return render(
        request,
        "generation.html",
        {
            "user": user,
            "csrf": user.csrf,
            "view": view,
            "body": body,
            "request_json": json.dumps(body["request"], indent=2, sort_keys=True),
            "events": events,
            "links": links,
            "deliveries": deliveries,
        },
    )


@router.post("/ui/generations/{generation_id}/approval")
async def set_approval(generation_id: str, request: Request, user: PostingUser) -> Response:
    form = await request.form()
    image_id, approval = form.get("image_id"), form.get("approval")
    if approval not in ("pending", "approved", "rejected"):
        raise ValidationFailed("approval", "must be pending, approved or rejected")
    if not isinstance(image_id, str) or not image_id:
        raise ValidationFailed("image_id", "field required")
    account = None if user.caller.is_admin else user.caller.account_id
    records = _runtime(request).services.records
    await records.set_approval(image_id, str(approval), account_id=account)
    back = form.get("back")
    target = back if back == "/ui/admin" else f"/ui/generations/{generation_id}"
    return _see_other(f"{target}#images")


@router.post("/ui/generations/{generation_id}/cancel")
async def cancel(generation_id: str, request: Request, user: PostingUser) -> Response:
    account = None if user.caller.is_admin else user.caller.account_id
    await _runtime(request).pipeline.cancel(generation_id, account)
    return _see_other(f"/ui/generations/{generation_id}")


@router.post("/ui/generations/{generation_id}/again")
async def run_again(generation_id: str, request: Request, user: PostingUser) -> Response:
    """Admit the same request again, as the signed-in caller."""
    runtime = _runtime(request)
    account = None if user.caller.is_admin else user.caller.account_id
    view = await runtime.services.records.get_generation(generation_id, account_id=account)
    body = {k: v for k, v in view.request.items() if not k.startswith("__")}
    result = await runtime.pipeline.admit(
        user.caller, _validated(body), source="ui", request_id=request.state.request_id
    )
    return _see_other(f"/ui/generations/{result.generation.id}")


# Account -----------------------------------------------------------------------------------


@router.get("/ui/account")
async def account_page(request: Request, user: User) -> Response:
    runtime = _runtime(request)
    account = await runtime.services.records.get_account(user.caller.account_id)
    summary = await account_routes.account_body(runtime, account)
    ledger = await runtime.services.reports.ledger(account.id, limit=50)
    first, last, rows = await runtime.services.usage(account.id, USAGE_DAYS)
    per_day: dict[str, int] = {}
    spend: dict[str, float] = {}
    for row in rows:
        per_day[row["date"]] = per_day.get(row["date"], 0) + row["generations"]
        spend[row["date"]] = spend.get(row["date"], 0.0) + float(row["usd"])
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    stamps = [datetime(d.year, d.month, d.day) for d in days]
    keys = [k for k in await runtime.services.records.list_keys() if k["account"] == account.name]
    return render(
        request,
        "account.html",
        {
            "user": user,
            "csrf": user.csrf,
            "account": summary,
            "ledger": ledger,
            "keys": keys,
            "usage_chart": bar_chart(
                f"Generations per day, last {USAGE_DAYS} days",
                stamps,
                [per_day.get(d.isoformat(), 0) for d in days],
                unit="",
            ),
            "spend_chart": bar_chart(
                f"Spend per day, last {USAGE_DAYS} days",
                stamps,
                [spend.get(d.isoformat(), 0.0) for d in days],
                unit="USD",
            ),
        },
    )
