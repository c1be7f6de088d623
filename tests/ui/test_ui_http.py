"""The web UI without a browser: redirects, cookie flags, CSRF, 403, CSP, cookie reads."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from pixelgate.runtime import Runtime
from pixelgate.ui.session import COOKIE_NAME
from tests.conftest import ADMIN_KEY
from tests.ui.conftest import UIClient, sign_in


def _plain(app: Any, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_root_redirects_to_ui_and_ui_to_sign_in(app: Any) -> None:
    async with _plain(app) as c:
        assert (await c.get("/")).headers["location"] == "/ui"
        assert (await c.get("/ui")).headers["location"] == "/ui/generate"
        page = await c.get("/ui/generate")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login"


async def test_pages_carry_a_csp_without_inline_scripts(app: Any) -> None:
    async with _plain(app) as c:
        page = await c.get("/ui/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text and "onclick" not in page.text


async def test_session_cookie_is_httponly_strict_and_holds_no_key(app: Any) -> None:
    async with _plain(app) as c:
        answer, _ = await sign_in(c, ADMIN_KEY)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP
    assert ADMIN_KEY not in cookie and ADMIN_KEY not in answer.headers["location"]


async def test_session_cookie_is_secure_over_https(app: Any) -> None:
    async with _plain(app, "https://testserver") as c:
        answer, _ = await sign_in(c, ADMIN_KEY)
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_wrong_key_is_refused_with_the_form_again(app: Any) -> None:
    async with _plain(app) as c:
        answer, _ = await sign_in(c, "pg_not_a_key")
    assert answer.status_code == 401
    assert "invalid API key" in answer.text
    assert "pg_not_a_key" not in answer.headers.get("set-cookie", "")
    assert COOKIE_NAME in c.cookies  # the anonymous session (CSRF token) only


async def test_login_without_its_csrf_token_is_refused(app: Any) -> None:
    async with _plain(app) as c:
        await c.get("/ui/login")
        answer = await c.post("/ui/login", data={"api_key": ADMIN_KEY})
    assert answer.status_code == 403
    assert "csrf_failed" in answer.text


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    ui_client: UIClient, runtime: Runtime
) -> None:
    c, csrf = await ui_client()
    refused = await c.post("/ui/admin/config", data={"config": '{"routing": {}}'})
    assert refused.status_code == 403
    assert "csrf_failed" in refused.text
    wrong = await c.post(
        "/ui/admin/config", data={"config": '{"routing": {}}', "csrf_token": csrf + "x"}
    )
    assert wrong.status_code == 403
    assert await runtime.store.config_versions() == []


async def test_a_plain_key_gets_a_403_page_on_admin(ui_client: UIClient, make_account: Any) -> None:
    _, headers = await make_account("plain")
    c, csrf = await ui_client(headers["Authorization"].removeprefix("Bearer "))
    page = await c.get("/ui/admin")
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "admin key" in page.text
    posted = await c.post("/ui/admin/breakers/reset", data={"provider": "fast", "csrf_token": csrf})
    assert posted.status_code == 403


async def test_the_cookie_reads_the_api_but_cannot_write_it(ui_client: UIClient) -> None:
    c, csrf = await ui_client()
    made = await c.post(
        "/ui/generate",
        data={"prompt": "a red fox", "provider": "fast", "csrf_token": csrf},
        headers={"Accept": "application/json"},
    )
    assert made.status_code == 202, made.text
    gen_id = made.json()["id"]
    assert (await c.get(f"/v1/generations/{gen_id}")).status_code == 200
    async with c.stream("GET", f"/v1/generations/{gen_id}/events") as stream:
        assert stream.status_code == 200
        text = ""
        async for chunk in stream.aiter_text():
            text += chunk
            if "event: succeeded" in text:
                break
    assert "event: succeeded" in text
    write = await c.post("/v1/generations", json={"prompt": "no header"})
    assert write.status_code == 401
    delete = await c.delete(f"/v1/generations/{gen_id}")
    assert delete.status_code == 401


async def test_estimate_and_generate_refuse_bad_input_naming_the_field(
    ui_client: UIClient, runtime: Runtime
) -> None:
    c, csrf = await ui_client()
    headers = {"Accept": "application/json", "X-CSRF-Token": csrf}
    estimate = await c.post("/ui/estimate", data={"prompt": "a cat"}, headers=headers)
    assert estimate.status_code == 200, estimate.text
    assert "credits" in estimate.json()
    bad = await c.post("/ui/generate", data={"prompt": "x", "n": "999"}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("n")
    assert bad.json()["error"]["request_id"]
    assert await runtime.store.list_generations(account_id=None) == []


async def test_invalid_config_is_refused_with_the_reason_and_rollback_works(
    ui_client: UIClient, runtime: Runtime
) -> None:
    c, csrf = await ui_client()
    ok = await c.post(
        "/ui/admin/config",
        data={"config": '{"routing": {"retry": {"attempts": 2}}}', "csrf_token": csrf},
    )
    assert ok.status_code == 303, ok.text
    ok2 = await c.post(
        "/ui/admin/config",
        data={"config": '{"routing": {"retry": {"attempts": 3}}}', "csrf_token": csrf},
    )
    assert ok2.status_code == 303
    bad = await c.post(
        "/ui/admin/config",
        data={"config": '{"routing": {"retry": {"attempts": "many"}}}', "csrf_token": csrf},
    )
    assert bad.status_code == 422
    assert "routing.retry.attempts" in bad.text
    versions = await runtime.store.config_versions()
    assert [v["version"] for v in versions] == [2, 1]
    back = await c.post("/ui/admin/config/rollback", data={"version": "1", "csrf_token": csrf})
    assert back.status_code == 303
    latest = (await runtime.store.config_versions())[0]
    assert latest["version"] == 3 and latest["data"] == versions[1]["data"]
    page = await c.get("/ui/admin?diff_from=2&diff_to=3")
    assert "version 2" in page.text and "&#34;attempts&#34;: 2" in page.text.replace('"', "&#34;")


async def test_every_page_renders_for_an_admin(ui_client: UIClient, runtime: Runtime) -> None:
    c, csrf = await ui_client()
    made = await c.post(
        "/ui/generate",
        data={"prompt": "a lighthouse", "csrf_token": csrf},
        headers={"Accept": "application/json"},
    )
    gen_id = made.json()["id"]
    view = await runtime.pipeline.wait(gen_id, 10)
    for path in (
        "/ui/generate",
        "/ui/gallery",
        "/ui/gallery?status=SUCCEEDED&approval=pending",
        f"/ui/generations/{gen_id}",
        "/ui/account",
        "/ui/admin",
        "/ui/logout",
    ):
        page = await c.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["content-security-policy"]
    thumb = await c.get(f"/ui/thumbs/{view.images[0].id}")
    assert thumb.headers["content-type"] == "image/webp"
    admin = await c.get("/ui/admin")
    assert 'id="no-alerts"' in admin.text
    await runtime.alerts.store.raise_alert(
        rule="provider_success_rate", subject="flaky", value=0.2, threshold=0.5,
        message="flaky: success rate 20 % over 10 minutes", now=runtime.store.clock(),
    )  # fmt: skip
    admin = await c.get("/ui/admin")
    assert 'class="alert-firing"' in admin.text and "flaky: success rate 20 %" in admin.text
    approve = await c.post(
        f"/ui/generations/{gen_id}/approval",
        data={"image_id": view.images[0].id, "approval": "approved", "csrf_token": csrf},
    )
    assert approve.status_code == 303
    again = await runtime.store.get_generation(gen_id)
    assert again.images[0].approval == "approved"
    await asyncio.sleep(0)
