"""Hostile and careless input (issue 14): every request is bounded, refused early with a
named field, and none can break an account, bloat the database or lock the admins out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pixelgate.core.bounds import MAX_CREDITS, MAX_JSON_DEPTH, MAX_METADATA_BYTES
from pixelgate.runtime import Runtime

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64}


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert "error" in body, body
    error: dict[str, Any] = body["error"]
    assert error["request_id"] == r.headers["x-request-id"]
    return error


# 1. Idempotency-Key --------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "   ", "a b", "\t"])
async def test_an_empty_or_blank_idempotency_key_is_refused_naming_the_header(
    client: httpx.AsyncClient, key: str
) -> None:
    for _ in range(2):  # the second one used to answer 500 forever after
        r = await client.post("/v1/generations", json=SMALL, headers={"Idempotency-Key": key})
        assert r.status_code == 422, r.text
        error = _error(r)
        assert error["code"] == "invalid_request"
        assert error["field"] == "Idempotency-Key"
    assert (await client.post("/v1/generations", json=SMALL)).status_code == 202


async def test_an_empty_idempotency_key_is_refused_on_every_route_that_takes_one(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": ""}
    r = await client.post("/v1/batches", json={"requests": [SMALL]}, headers=headers)
    assert r.status_code == 422 and _error(r)["field"] == "Idempotency-Key"
    r = await client.post(
        "/v1/images/generations", json={"prompt": "x", "model": "fast"}, headers=headers
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"


# 2. Body size and free-form fields ------------------------------------------------


@pytest.fixture
async def small_body_client(
    make_settings: Callable[..., Any],
) -> AsyncIterator[httpx.AsyncClient]:
    from pixelgate.api.app import create_app
    from tests.conftest import admin_client

    settings = make_settings(max_body_bytes=4096, routing={"default": ["placeholder"]})
    rt = await Runtime.open(settings)
    app = create_app(settings, runtime=rt, run_worker=False)
    try:
        async with admin_client(app) as c:
            yield c
    finally:
        await rt.close()


@pytest.mark.parametrize("path", ["/v1/generations", "/api/generate", "/admin/accounts"])
async def test_a_declared_body_over_max_body_bytes_is_refused_413_before_parsing(
    small_body_client: httpx.AsyncClient, path: str
) -> None:
    body = b'{"prompt": "' + b"x" * 10_000 + b'"}'
    r = await small_body_client.post(
        path, content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.headers["x-request-id"]
    text = r.text
    assert "payload_too_large" in text and "4096" in text


async def test_a_streamed_body_over_max_body_bytes_is_refused_413(
    small_body_client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = await small_body_client.post(
        "/v1/generations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    error = _error(r)
    assert error["code"] == "payload_too_large" and error["field"] == "body"
    listing = await small_body_client.get("/v1/generations")
    assert listing.json()["data"] == []


async def test_a_body_under_the_limit_is_accepted(small_body_client: httpx.AsyncClient) -> None:
    assert (await small_body_client.post("/v1/generations", json=SMALL)).status_code == 202


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("metadata", "what"),
    [
        ({"blob": "x" * (MAX_METADATA_BYTES + 1)}, "bytes"),
        (_deep(MAX_JSON_DEPTH + 1), "deeper"),
        ({f"k{i}": i for i in range(300)}, "keys"),
    ],
)
async def test_metadata_is_bounded_in_size_depth_and_keys(
    client: httpx.AsyncClient, metadata: dict[str, Any], what: str
) -> None:
    r = await client.post("/v1/generations", json={**SMALL, "metadata": metadata})
    assert r.status_code == 422, r.text
    error = _error(r)
    assert error["field"] == "metadata" and what in error["message"]


async def test_metadata_at_the_bounds_is_accepted(client: httpx.AsyncClient) -> None:
    metadata = {"deep": _deep(MAX_JSON_DEPTH - 1), "blob": "x" * 1000}
    r = await client.post("/v1/generations", json={**SMALL, "metadata": metadata})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("negative_prompt", "x" * 40_000),
        ("style", "s" * 300),
        ("model", "m" * 300),
        ("options", {"blob": "x" * (MAX_METADATA_BYTES + 1)}),
        ("inputs", {"name": "x" * 5000}),
        ("entities", [{"type": "character", "id": "i" * 300}]),
        ("n", 10**30),
        ("width", 10**30),
        ("max_cost_per_image", "1e30"),
    ],
)
async def test_free_form_and_numeric_fields_are_bounded(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    r = await client.post("/v1/generations", json={**SMALL, field: value})
    assert r.status_code == 422, r.text
    assert _error(r)["field"].startswith(field)


# 3. Integer bounds on credits -----------------------------------------------------


async def test_huge_credits_are_refused_with_422_not_500(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/accounts", json={"name": "rich", "credits": 10**28})
    assert r.status_code == 422 and _error(r)["field"] == "credits"
    assert (await client.post("/admin/accounts", json={"name": "rich", "credits": 5})).is_success
    r = await client.post(
        "/admin/accounts/rich/credits", json={"credits": 10**28, "reason": "overflow"}
    )
    assert r.status_code == 422 and _error(r)["field"] == "credits"


async def test_a_grant_that_would_leave_the_balance_range_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/admin/accounts", json={"name": "rich", "credits": 0})
    grant = {"credits": MAX_CREDITS, "reason": "max"}
    assert (await client.post("/admin/accounts/rich/credits", json=grant)).status_code == 200
    r = await client.post("/admin/accounts/rich/credits", json=grant)
    assert r.status_code == 422
    error = _error(r)
    assert error["code"] == "balance_out_of_range" and error["field"] == "credits"
    account = (await client.get("/admin/accounts/rich")).json()
    assert account["credits"] == MAX_CREDITS


# 4. The last admin -----------------------------------------------------------------


async def test_the_last_enabled_admin_account_cannot_be_disabled(
    client: httpx.AsyncClient,
) -> None:
    r = await client.patch("/admin/accounts/admin", json={"disabled": True})
    assert r.status_code == 409, r.text
    assert _error(r)["code"] == "last_admin"
    assert (await client.get("/admin/accounts")).status_code == 200  # still an admin


async def test_an_admin_can_be_disabled_while_another_enabled_admin_remains(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/admin/accounts", json={"name": "ops"})
    key = (await client.post("/admin/accounts/ops/keys", json={"admin": True})).json()
    r = await client.patch("/admin/accounts/admin", json={"disabled": True})
    assert r.status_code == 200, r.text
    ops = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/admin/accounts")).status_code == 401  # the cache was dropped
    r = await client.patch("/admin/accounts/ops", json={"disabled": True}, headers=ops)
    assert r.status_code == 409  # now ops is the last one
    r = await client.delete(f"/admin/keys/{key['id']}", headers=ops)
    assert r.status_code == 409
    r = await client.patch("/admin/accounts/admin", json={"disabled": False}, headers=ops)
    assert r.status_code == 200
    assert (await client.get("/admin/accounts")).status_code == 200


async def test_revoking_the_last_admin_key_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    keys = (await client.get("/admin/keys")).json()["data"]
    [admin_key] = [k for k in keys if k["admin"] and k["revoked_at"] is None]
    r = await client.delete(f"/admin/keys/{admin_key['id']}")
    assert r.status_code == 409 and _error(r)["code"] == "last_admin"


async def test_disabled_must_be_a_json_boolean(client: httpx.AsyncClient) -> None:
    await client.post("/admin/accounts", json={"name": "someone"})
    r = await client.patch("/admin/accounts/someone", json={"disabled": 0})
    assert r.status_code == 422 and _error(r)["field"] == "disabled"


# 7. Unsafe literal URLs at admission ---------------------------------------------

UNSAFE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:9/a.png",
    "http://2130706433/",
    "http://[::ffff:0:a9fe:a9fe]/latest/meta-data/",
    "http://10.1.2.3/",
]


@pytest.mark.parametrize("url", UNSAFE)
async def test_an_unsafe_literal_reference_url_is_refused_at_admission_writing_nothing(
    client: httpx.AsyncClient,
    make_account: Callable[..., Any],
    url: str,
) -> None:
    _, headers = await make_account("free", credits=10, tier="FREE")  # one request a day
    for field in ("reference_image_url", "webhook_url"):
        r = await client.post("/v1/generations", json={**SMALL, field: url}, headers=headers)
        assert r.status_code == 422, r.text
        error = _error(r)
        assert (error["code"], error["field"]) == ("unsafe_url", field)
    r = await client.post(
        "/api/generate", json={"prompt": "x", "referenceImageUrl": url}, headers=headers
    )
    assert r.status_code == 422 and r.json()["code"] == "unsafe_url"
    r = await client.post(
        "/v1/batches", json={"requests": [SMALL, {**SMALL, "image_url": url}]}, headers=headers
    )
    assert r.status_code == 422 and _error(r)["field"] == "requests[1].image_url"
    r = await client.post(
        "/v1/images/generations",
        json={"prompt": "x", "model": "fast", "reference_image_url": url},
        headers=headers,
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "reference_image_url"
    account = (await client.get("/v1/account", headers=headers)).json()
    assert account["credits"] == 10
    assert (await client.get("/v1/generations", headers=headers)).json()["data"] == []
    # nothing counted against the FREE tier's one request a day
    assert (await client.post("/v1/generations", json=SMALL, headers=headers)).status_code == 202


# 9. Docs UI assets from the package ------------------------------------------------


async def test_the_docs_pages_load_nothing_from_a_cdn(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        r = await client.get(page)
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text, r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = await client.get(f"/docs/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 100_000


# An edit refused for its fields stores none of its uploads ---------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "x", "width": "5", "height": "5"},
        {"prompt": "x", "reference_image_url": "http://169.254.169.254/latest/meta-data/"},
        {"prompt": "x", "metadata": '{"blob": "' + "x" * 20_000 + '"}'},
    ],
)
async def test_a_refused_edit_stores_none_of_its_uploads(
    client: httpx.AsyncClient, settings: Any, fields: dict[str, str]
) -> None:
    from tests.fakes import png_bytes

    r = await client.post(
        "/v1/generations/edits",
        data=fields,
        files={"image": ("a.png", png_bytes(32, 32), "image/png")},
    )
    assert r.status_code == 422, r.text
    inputs = settings.data_dir / "images" / "inputs"
    stored = [p for p in inputs.rglob("*") if p.is_file()] if inputs.exists() else []
    assert stored == []


async def _objects(runtime: Any) -> int:
    return (await runtime.storage.stats()).objects


@pytest.mark.parametrize(
    ("path", "fields", "files", "status"),
    [
        # refused by configuration checks and by the mask check
        ("/v1/generations/edits", {"prompt": "x", "provider": "nope"}, {}, 422),
        ("/v1/generations/edits", {"prompt": "x"}, {"mask": (8, 8)}, 422),
        ("/v1/images/edits", {"prompt": "x"}, {"mask": (8, 8)}, 400),
        # refused by admission, after the uploads were read: no credits left
        ("/v1/generations/edits", {"prompt": "x"}, {}, 402),
        ("/v1/images/edits", {"prompt": "x"}, {}, 402),
    ],
)
async def test_an_edit_refused_after_its_upload_leaves_storage_unchanged(
    runtime: Any,
    app: Any,
    make_account: Any,
    path: str,
    fields: dict[str, str],
    files: dict[str, tuple[int, int]],
    status: int,
) -> None:
    from tests.fakes import png_bytes

    _, headers = await make_account("poor", credits=0 if status == 402 else 100)
    before = await _objects(runtime)
    sent: dict[str, Any] = {"image": ("a.png", png_bytes(32, 32), "image/png")}
    for name, (w, h) in files.items():
        sent[name] = (f"{name}.png", png_bytes(w, h), "image/png")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers
    ) as c:
        r = await c.post(path, data=fields, files=sent)
    assert r.status_code == status, r.text
    assert await _objects(runtime) == before
    assert await runtime.store.list_generations(account_id=None) == []


async def test_a_refused_edit_keeps_an_input_stored_earlier(
    client: httpx.AsyncClient, runtime: Any, make_account: Any
) -> None:
    """Inputs are named by their content: a refusal must not remove one in use."""
    from tests.fakes import png_bytes

    image = png_bytes(32, 32)
    ok = await client.post(
        "/v1/generations/edits", data={"prompt": "x"}, files={"image": ("a.png", image)}
    )
    assert ok.status_code == 202, ok.text
    key = ok.json()["request"]["input_image_key"]
    refused = await client.post(
        "/v1/generations/edits",
        data={"prompt": "x", "provider": "nope"},
        files={"image": ("a.png", image)},
    )
    assert refused.status_code == 422
    _, headers = await make_account("broke", credits=0)
    refused = await client.post(
        "/v1/images/edits",
        data={"prompt": "x"},
        files={"image": ("a.png", image)},
        headers=headers,
    )
    assert refused.status_code == 402
    assert await runtime.storage.exists(key)


async def test_a_batchs_own_metadata_is_bounded_too(client: httpx.AsyncClient) -> None:
    body = {"requests": [SMALL], "metadata": {"blob": "x" * (MAX_METADATA_BYTES + 1)}}
    r = await client.post("/v1/batches", json=body)
    assert r.status_code == 422 and _error(r)["field"] == "metadata"


# Text no database can store (PostgreSQL refuses NUL and unpaired surrogates) -----------


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/v1/templates", '{"name": "t1", "text": "a\\u0000b"}', "text"),
        ("/v1/generations", '{"prompt": "a \\ud884 b", "width": 64, "height": 64}', "prompt"),
        ("/v1/generations", '{"prompt": "x", "metadata": {"k": ["\\u0000"]}}', "metadata.k.0"),
        ("/admin/accounts", '{"name": "n", "email": "a\\udc00@b.c"}', "email"),
    ],
)
async def test_unstorable_text_is_refused_with_422_naming_the_field(
    client: httpx.AsyncClient, path: str, raw: str, field: str
) -> None:
    r = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert _error(r)["field"] == field


async def test_a_nul_in_a_query_parameter_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/generations", params={"cursor": "gen_\x00"})
    assert r.status_code == 422 and _error(r)["field"] == "cursor"


async def test_paired_surrogates_and_escapes_are_fine(client: httpx.AsyncClient) -> None:
    raw = '{"prompt": "a cat \\ud83d\\ude00 \\u00e9", "width": 64, "height": 64}'
    r = await client.post(
        "/v1/generations", content=raw, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 202, r.text


async def test_unstorable_text_in_a_form_field_is_refused(client: httpx.AsyncClient) -> None:
    from tests.fakes import png_bytes

    r = await client.post(
        "/v1/generations/edits",
        data={"prompt": "a\x00b"},
        files={"image": ("a.png", png_bytes(32, 32), "image/png")},
    )
    assert r.status_code == 422 and _error(r)["field"] == "prompt"
