"""UI fixtures: a signed-in httpx client on the app (cookie session, CSRF token)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page without a CSRF token"
    return match[1]


async def sign_in(client: httpx.AsyncClient, key: str) -> tuple[httpx.Response, str]:
    """Sign in through the login form; returns the answer and the session's CSRF token."""
    page = await client.get("/ui/login")
    answer = await client.post(
        "/ui/login", data={"api_key": key, "csrf_token": csrf_of(page.text)}
    )
    if answer.status_code != 303:
        return answer, ""
    home = await client.get("/ui/generate")
    return answer, csrf_of(home.text)


UIClient = Callable[..., Coroutine[Any, Any, tuple[httpx.AsyncClient, str]]]


@pytest.fixture
async def ui_client(app: Any) -> AsyncIterator[UIClient]:
    """``await ui_client(key)`` → a client signed in with ``key`` and its CSRF token."""
    clients: list[httpx.AsyncClient] = []

    async def factory(
        key: str = ADMIN_KEY, base_url: str = "http://testserver"
    ) -> tuple[httpx.AsyncClient, str]:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        clients.append(c)
        answer, csrf = await sign_in(c, key)
        assert answer.status_code == 303, answer.text
        return c, csrf

    yield factory
    for c in clients:
        await c.aclose()
