"""The operator's page ``/ui/admin`` and its forms (admin keys only; a 403 page otherwise).

Every action calls the admin API's own route function (breaker reset, hot configuration,
accounts, keys, credits, tiers), so validation and side effects are the API's.
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from pixelgate.api.routes import admin_accounts, admin_routing
from pixelgate.core.calendar import day_range
from pixelgate.core.models import Status
from pixelgate.errors import PixelgateError, ValidationFailed
from pixelgate.runtime import Runtime
from pixelgate.ui.auth import AdminUser, PostingAdmin, UIUser
from pixelgate.ui.charts import Series, bar_chart, line_chart
from pixelgate.ui.reads import GalleryFilter, gallery_page, recent_by_provider
from pixelgate.ui.render import SECURITY_HEADERS, UIRoute, render

router = APIRouter(route_class=UIRoute, include_in_schema=False)

HISTORY = 20
APPROVAL_QUEUE = 12
WINDOWS = {
    "hour": (timedelta(hours=1), 12, "%H:%M"),
    "day": (timedelta(days=1), 24, "%H:%M"),
}
MONTH_DAYS = 30


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _body(response: Response) -> Any:
    return json.loads(bytes(response.body))


def _model(cls: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "form"
        raise ValidationFailed(where, str(first["msg"])) from None


#: alerts listed on the admin page (the firing ones and the latest resolved)
ALERTS_SHOWN = 20


async def _alerts(runtime: Runtime) -> list[dict[str, Any]]:
    """Firing alerts first, then the recently resolved ones (``runtime.alerts``)."""
    recent = await runtime.alerts.history(limit=ALERTS_SHOWN)
    return sorted(recent, key=lambda a: a["status"] != "firing")


def _config_diff(history: list[dict[str, Any]], a: int | None, b: int | None) -> str | None:
    if a is None or b is None:
        return None
    docs = {v["version"]: v["data"] for v in history}
    if a not in docs or b not in docs:
        return None
    lines = difflib.unified_diff(
        json.dumps(docs[a], indent=2, sort_keys=True).splitlines(),
        json.dumps(docs[b], indent=2, sort_keys=True).splitlines(),
        fromfile=f"version {a}",
        tofile=f"version {b}",
        lineterm="",
    )
    return "\n".join(lines) or "(no difference)"


def _rates(ok: list[int], total: list[int]) -> list[float | None]:
    return [100.0 * o / n if n else None for o, n in zip(ok, total, strict=True)]


async def _charts(runtime: Runtime) -> dict[str, Any]:
    now = runtime.services.records.clock()
    charts: dict[str, Any] = {}
    for name, (window, buckets, fmt) in WINDOWS.items():
        found = await recent_by_provider(
            runtime.services.records, now=now, window=window, buckets=buckets
        )
        providers = sorted(found.total)
        charts[name] = {
            "success": line_chart(
                f"Success rate per provider, last {name}",
                found.buckets,
                [Series(p, found.success_rate(p)) for p in providers],
                unit="%",
                y_max=100.0,
                time_format=fmt,
            ),
            "latency": line_chart(
                f"Average provider latency, last {name}",
                found.buckets,
                [Series(p, found.avg_latency_s(p)) for p in providers],
                unit="s",
                time_format=fmt,
            ),
            "throughput": bar_chart(
                f"Generations finished, last {name}",
                found.buckets,
                found.throughput,
                unit="jobs",
                time_format=fmt,
                x_title="time (UTC)",
            ),
            "summary": found.summary(),
            "truncated": found.truncated,
        }
    first, last = day_range(MONTH_DAYS, now)
    rows = await runtime.services.reports.usage(account_id=None, first_day=first, last_day=last)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    index = {d.isoformat(): i for i, d in enumerate(days)}
    ok: dict[str, list[int]] = {}
    total: dict[str, list[int]] = {}
    latency: dict[str, list[float | None]] = {}
    for row in rows:
        p, i = row["provider"], index.get(row["date"])
        if i is None:
            continue
        ok.setdefault(p, [0] * len(days))[i] += row["succeeded"]
        total.setdefault(p, [0] * len(days))[i] += row["generations"]
        if row["avg_latency_ms"] is not None:
            latency.setdefault(p, [None] * len(days))[i] = row["avg_latency_ms"] / 1000
    stamps = [datetime(d.year, d.month, d.day) for d in days]
    names = sorted(total)
    charts["month"] = {
        "success": line_chart(
            f"Success rate per provider, last {MONTH_DAYS} days",
            stamps,
            [Series(p, _rates(ok[p], total[p])) for p in names],
            unit="%",
            y_max=100.0,
            time_format="%m-%d",
            x_title="day (UTC)",
        ),
        "latency": line_chart(
            f"Average provider latency, last {MONTH_DAYS} days",
            stamps,
            [Series(p, latency.get(p, [None] * len(days))) for p in names],
            unit="s",
            time_format="%m-%d",
            x_title="day (UTC)",
        ),
    }
    return charts


async def admin_page(
    request: Request,
    user: UIUser,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    new_key: dict[str, Any] | None = None,
    draft: str | None = None,
) -> Response:
    runtime = _runtime(request)
    control = runtime.pipeline.control
    await control.refresh(force=True)
    providers = _body(await admin_routing.admin_providers(runtime, user.caller, check=True))
    history = await runtime.services.records.config_versions(HISTORY)
    params = request.query_params
    diff_a, diff_b = params.get("diff_from", ""), params.get("diff_to", "")
    approvals, _ = await gallery_page(
        runtime.services.records,
        account_id=None,
        flt=GalleryFilter(status=Status.SUCCEEDED, approval="pending"),
        cursor=None,
        per_page=APPROVAL_QUEUE,
    )
    current = control.public()
    return render(
        request,
        "admin.html",
        {
            "user": user,
            "csrf": user.csrf,
            "error": error,
            "notice": notice,
            "new_key": new_key,
            "queue": await runtime.services.records.queue_depth(),
            "worker": runtime.worker,
            "charts": await _charts(runtime),
            "providers": providers["providers"],
            "chain": providers["chain"],
            "accounts": await runtime.services.records.list_accounts(),
            "keys": await runtime.services.records.list_keys(),
            "tiers": sorted(runtime.settings.tiers),
            "approvals": approvals,
            "alerts": await _alerts(runtime),
            "config": current,
            "config_text": draft
            if draft is not None
            else json.dumps(current["overrides"] or {}, indent=2, sort_keys=True),
            "history": history,
            "diff": _config_diff(
                history,
                int(diff_a) if diff_a.isdigit() else None,
                int(diff_b) if diff_b.isdigit() else None,
            ),
        },
        status=status,
    )


def _done(message: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/admin?done={message}", status_code=303, headers=SECURITY_HEADERS)


@router.get("/ui/admin")
async def admin(request: Request, user: AdminUser) -> Response:
    notice = request.query_params.get("done")
    return await admin_page(request, user, notice=notice[:200] if notice else None)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


@router.post("/ui/admin/breakers/reset")
async def reset_breaker(request: Request, user: PostingAdmin) -> Response:
    form = await _form(request)
    name = form.get("provider", "")
    body = {"action": "reset-all"} if name == "*" else {"action": "reset", "provider": name}
    answer = await admin_routing.reset_breakers(request, _runtime(request), user.caller, body)
    if answer.status_code != 200:
        message = _body(answer)["error"]["message"]
        return await admin_page(request, user, status=answer.status_code, error=message)
    return _done(f"breaker reset: {name if name != '*' else 'all'}")


@router.post("/ui/admin/config")
async def save_config(request: Request, user: PostingAdmin) -> Response:
    """Validate and store a new hot configuration; a bad one is refused, the old one stays."""
    form = await _form(request)
    text = form.get("config", "")
    try:
        document = json.loads(text or "{}")
        if not isinstance(document, dict):
            raise ValidationFailed("config", "must be a JSON object")
        version = form.get("version", "")
        await admin_routing.put_config(
            _runtime(request), user.caller, document, if_match=version or None
        )
    except json.JSONDecodeError as exc:
        return await admin_page(
            request, user, status=422, error=f"config: not JSON ({exc.msg})", draft=text
        )
    except PixelgateError as exc:
        status = 409 if exc.code == "config_version_conflict" else 422
        return await admin_page(request, user, status=status, error=exc.message, draft=text)
    return _done("configuration saved")


@router.post("/ui/admin/config/rollback")
async def rollback_config(request: Request, user: PostingAdmin) -> Response:
    """Store an earlier version's document as the newest version."""
    form = await _form(request)
    runtime = _runtime(request)
    raw = form.get("version", "")
    history = await runtime.services.records.config_versions(admin_routing.MAX_HISTORY)
    found = [v for v in history if str(v["version"]) == raw]
    if not found:
        raise ValidationFailed("version", f"unknown configuration version {raw!r}")
    try:
        await admin_routing.put_config(runtime, user.caller, found[0]["data"], if_match=None)
    except PixelgateError as exc:
        return await admin_page(request, user, status=422, error=exc.message)
    return _done(f"rolled back to the document of version {raw}")


@router.post("/ui/admin/accounts")
async def create_account(request: Request, user: PostingAdmin) -> Response:
    form = await _form(request)
    data: dict[str, Any] = {"name": form.get("name", ""), "tier": form.get("tier") or "FREE"}
    if form.get("credits"):
        if not form["credits"].isdigit():
            raise ValidationFailed("credits", "must be a whole number")
        data["credits"] = int(form["credits"])
    body = _model(admin_accounts.AccountCreate, data)
    await admin_accounts.create_account(body, _runtime(request), user.caller)
    return _done(f"account {body.name} created")


@router.post("/ui/admin/accounts/{name}/credits")
async def grant_credits(name: str, request: Request, user: PostingAdmin) -> Response:
    form = await _form(request)
    raw = form.get("credits", "")
    if not raw.lstrip("-").isdigit():
        raise ValidationFailed("credits", "must be a whole number")
    body = _model(
        admin_accounts.CreditChange,
        {"credits": int(raw), "reason": form.get("reason") or "granted in the web UI"},
    )
    await admin_accounts.change_credits(name, body, _runtime(request), user.caller)
    return _done(f"credits changed for {name}")


@router.post("/ui/admin/accounts/{name}/tier")
async def set_tier(name: str, request: Request, user: PostingAdmin) -> Response:
    form = await _form(request)
    body = _model(admin_accounts.AccountUpdate, {"tier": form.get("tier", "")})
    await admin_accounts.update_account(name, body, request, _runtime(request), user.caller)
    return _done(f"tier of {name} set")


@router.post("/ui/admin/accounts/{name}/keys")
async def create_key(name: str, request: Request, user: PostingAdmin) -> Response:
    """A new key, shown once on the page that answers (never in a URL)."""
    form = await _form(request)
    body = _model(
        admin_accounts.KeyCreate,
        {"admin": form.get("admin") == "on", "name": form.get("key_name") or None},
    )
    answer = await admin_accounts.create_key(name, body, _runtime(request), user.caller)
    return await admin_page(request, user, status=201, new_key=_body(answer))


@router.post("/ui/admin/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, user: PostingAdmin) -> Response:
    await admin_accounts.revoke_key(key_id, request, _runtime(request), user.caller)
    return _done(f"key {key_id} revoked")
