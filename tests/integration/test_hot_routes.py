"""Hot routes (``api/hot.py``): the usual request skips FastAPI's routing and dependency
resolution, and every other request gets exactly the answer FastAPI's handling of the
route gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest

from pixelgate.api.contract import AllowMiddleware
from pixelgate.api.hot import Declined, HotRoute

NATIVE = {"prompt": "a red fox", "width": 64, "height": 64}
OPENAI = {"model": "placeholder", "prompt": "a red fox", "size": "64x64"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the requests whose dependencies FastAPI resolved."""
    seen: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    yield seen


@pytest.fixture
def fastapi_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call to make every hot request FastAPI's (the reference answers)."""

    async def decline(self: HotRoute, scope: Any, receive: Any) -> Declined:
        return Declined(())

    return lambda: monkeypatch.setattr(HotRoute, "answer_usual", decline)


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the requests that went down the whole middleware stack to routing."""
    seen: list[str] = []
    call = AllowMiddleware.__call__

    async def counting(self: AllowMiddleware, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await call(self, scope, receive, send)

    monkeypatch.setattr(AllowMiddleware, "__call__", counting)
    yield seen


async def test_a_usual_request_skips_routing_and_the_layers_it_does_not_need(
    client: httpx.AsyncClient, routed: list[str]
) -> None:
    r = await client.post("/v1/generations", json=NATIVE, headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"]  # the middleware it needs still ran
    assert (await client.post("/v1/images/generations", json=OPENAI)).status_code == 200
    assert routed == []
    # a declined one goes down the whole stack, its body replayed
    r = await client.post("/v1/generations?x=1", json=NATIVE)
    assert r.status_code == 202, r.text
    assert r.json()["prompt"] == NATIVE["prompt"]
    r = await client.post("/v1/images/generations", json=OPENAI, headers={"x": "1"}, params="a")
    assert r.status_code == 200, r.text
    assert routed == ["/v1/generations", "/v1/images/generations"]


async def test_an_error_raised_after_the_hot_path_acted_gets_the_handlers_answer(
    client: httpx.AsyncClient, make_account: Any, fastapi_only: Any
) -> None:
    """A 402 (no credits) comes from the fast function itself, not from a check FastAPI
    would make first: the app's handler answers it, as from the endpoint."""
    _, headers = await make_account("broke", credits=0)
    hot = [
        await client.post("/v1/generations", json=NATIVE, headers=headers),
        await client.post("/v1/images/generations", json=OPENAI, headers=headers),
    ]
    fastapi_only()
    plain = [
        await client.post("/v1/generations", json=NATIVE, headers=headers),
        await client.post("/v1/images/generations", json=OPENAI, headers=headers),
    ]
    assert [r.status_code for r in hot] == [402, 402], [r.text for r in hot]
    for a, b in zip(hot, plain, strict=True):
        assert _answer(a) == _answer(b)
    assert hot[0].json()["error"]["request_id"] == hot[0].headers["x-request-id"]


async def test_a_usual_request_skips_fastapis_dependency_resolution(
    client: httpx.AsyncClient, resolved: list[str]
) -> None:
    native = await client.post("/v1/generations", json=NATIVE, headers={"Prefer": "wait=10"})
    assert native.status_code == 200, native.text
    assert native.json()["status"] == "SUCCEEDED"
    assert native.headers["preference-applied"] == "wait=10"
    openai = await client.post("/v1/images/generations", json=OPENAI)
    assert openai.status_code == 200, openai.text
    assert len(openai.json()["data"]) == 1
    assert resolved == []
    # an unusual one (a query string) is FastAPI's: the check above can see it
    assert (await client.post("/v1/generations?x=1", json=NATIVE)).status_code == 202
    assert resolved == ["/v1/generations"]


def _answer(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body and headers of an answer, without what differs per request."""
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    headers = {
        k: v
        for k, v in r.headers.items()
        if k not in ("x-request-id", "content-length", "location", "idempotent-replayed")
        and k != "x-pixelgate-generation-id"
    }
    return r.status_code, body, headers


UNUSUAL: list[tuple[str, str, dict[str, str], bytes]] = [
    ("native, malformed JSON", "/v1/generations", JSON, b'{"prompt": '),
    ("native, a list", "/v1/generations", JSON, b"[1, 2]"),
    ("native, a field missing", "/v1/generations", JSON, b'{"width": 64}'),
    ("native, a bad field", "/v1/generations", JSON, b'{"prompt": "x", "width": "wide"}'),
    ("native, no body", "/v1/generations", JSON, b""),
    ("native, text/plain", "/v1/generations", {"content-type": "text/plain"}, b'{"prompt": "x"}'),
    ("native, no content type", "/v1/generations", {}, b'{"prompt": "x"}'),
    ("native, a NUL", "/v1/generations", JSON, b'{"prompt": "a\\u0000b"}'),
    ("native, a NUL in the query", "/v1/generations?q=%00", JSON, json.dumps(NATIVE).encode()),
    (
        "native, an idempotency key too long",
        "/v1/generations",
        {**JSON, "idempotency-key": "k" * 256},
        json.dumps(NATIVE).encode(),
    ),
    (
        "native, a blank idempotency key",
        "/v1/generations",
        {**JSON, "idempotency-key": "  "},
        json.dumps(NATIVE).encode(),
    ),
    (
        "native, an idempotency key with a space",
        "/v1/generations",
        {**JSON, "idempotency-key": "a b"},
        b'{"width": 64}',
    ),
    ("native, no key", "/v1/generations", {**JSON, "authorization": ""}, b'{"prompt": "x"}'),
    (
        "native, a wrong key",
        "/v1/generations",
        {**JSON, "authorization": "Bearer pg_nope"},
        b'{"prompt": "x"}',
    ),
    ("openai, malformed JSON", "/v1/images/generations", JSON, b"{"),
    ("openai, a list", "/v1/images/generations", JSON, b"[]"),
    ("openai, an unknown field", "/v1/images/generations", JSON, b'{"prompt": "x", "colour": 1}'),
    ("openai, an unknown model", "/v1/images/generations", JSON, b'{"prompt": "x", "model": "m"}'),
    (
        "openai, a wrong key",
        "/v1/images/generations",
        {**JSON, "authorization": "Bearer pg_nope"},
        b'{"prompt": "x"}',
    ),
    ("openai, a NUL", "/v1/images/generations", JSON, b'{"prompt": "\\u0000"}'),
    ("openai, text/plain", "/v1/images/generations", {"content-type": "text/plain"}, b"{}"),
]


@pytest.mark.parametrize(
    ("path", "headers", "content"), [case[1:] for case in UNUSUAL], ids=[c[0] for c in UNUSUAL]
)
async def test_an_unusual_request_gets_fastapis_own_answer(
    client: httpx.AsyncClient,
    fastapi_only: Any,
    path: str,
    headers: dict[str, str],
    content: bytes,
) -> None:
    hot = await client.post(path, headers=headers, content=content)
    assert hot.status_code >= 400, hot.text
    fastapi_only()
    plain = await client.post(path, headers=headers, content=content)
    assert _answer(hot) == _answer(plain)


async def test_a_repeated_header_goes_to_fastapi(
    client: httpx.AsyncClient, resolved: list[str]
) -> None:
    headers = [("content-type", "application/json"), ("prefer", "wait=5"), ("prefer", "x")]
    r = await client.post("/v1/generations", headers=headers, content=json.dumps(NATIVE))
    assert r.status_code in (200, 202), r.text
    assert resolved == ["/v1/generations"]


async def test_a_usual_answer_is_fastapis_answer(
    client: httpx.AsyncClient, fastapi_only: Any
) -> None:
    cases = [
        ("/v1/generations", {"prefer": "wait=10", "idempotency-key": "same-1"}, NATIVE),
        ("/v1/generations", {}, NATIVE),
        ("/v1/images/generations", {"idempotency-key": "same-2"}, OPENAI),
    ]
    hot = [await client.post(p, headers=h, json=b) for p, h, b in cases]
    fastapi_only()
    plain = [await client.post(p, headers=h, json=b) for p, h, b in cases]
    for a, b in zip(hot, plain, strict=True):
        assert a.status_code == b.status_code or {a.status_code, b.status_code} == {200}
        assert sorted(a.json()) == sorted(b.json())
        assert sorted(_answer(a)[2]) == sorted(_answer(b)[2])
    # the idempotency keys were the same: FastAPI's answers replayed the hot ones
    assert plain[0].json()["id"] == hot[0].json()["id"]
    assert plain[0].headers["idempotent-replayed"] == "true"
    assert (
        plain[2].headers["x-pixelgate-generation-id"] == hot[2].headers["x-pixelgate-generation-id"]
    )
