"""The native /v1/generations API, in-process over the ASGI transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from pixelgate.runtime import Runtime
from tests.conftest import wait_status

WAIT = {"Prefer": "wait=10"}


async def _create(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post("/v1/generations", json=body, **kw)


async def test_create_answers_202_with_location(client: httpx.AsyncClient) -> None:
    r = await _create(client, {"prompt": "a lighthouse", "width": 64, "height": 64})
    assert r.status_code == 202
    body = r.json()
    assert r.headers["location"] == f"/v1/generations/{body['id']}"
    assert body["id"].startswith("gen_")
    assert body["status"] in ("PENDING", "PROCESSING", "SUCCEEDED")
    assert r.headers["x-request-id"].startswith("req_")


async def test_prefer_wait_returns_the_finished_generation(client: httpx.AsyncClient) -> None:
    r = await _create(
        client,
        {"prompt": "a red fox", "width": 96, "height": 80, "format": "jpeg", "seed": 7},
        headers=WAIT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCEEDED"
    assert body["progress"] == 100
    assert body["provider"] == "fast" and body["model"] == "placeholder-1"
    assert body["error"] is None
    assert body["timings"]["total_ms"] >= body["timings"]["queue_ms"] >= 0
    assert body["cost"]["credits"] == 1
    [image] = body["images"]
    assert (image["width"], image["height"], image["format"]) == (96, 80, "jpeg")
    assert image["key"].startswith("ai/admin/default/")
    assert image["key"].endswith(f"{body['id']}-0.jpg")
    file = await client.get(image["url"].split("testserver", 1)[-1])
    assert file.status_code == 200
    assert file.headers["content-type"] == "image/jpeg"
    assert "immutable" in file.headers["cache-control"]
    import hashlib

    assert hashlib.sha256(file.content).hexdigest() == image["sha256"]


async def test_prefer_wait_past_the_time_answers_202(client: httpx.AsyncClient) -> None:
    r = await _create(
        client, {"prompt": "slow", "provider": "slow"}, headers={"Prefer": "wait=0.2"}
    )
    assert r.status_code == 202
    assert r.json()["status"] in ("PENDING", "PROCESSING")
    done = await wait_status(client, r.json()["id"], "SUCCEEDED")
    assert len(done["images"]) == 1


async def test_n_images_are_stored_each_with_its_own_key(client: httpx.AsyncClient) -> None:
    r = await _create(
        client, {"prompt": "three cats", "n": 3, "width": 32, "height": 32}, headers=WAIT
    )
    images = r.json()["images"]
    assert [i["key"].rsplit("-", 1)[-1] for i in images] == ["0.png", "1.png", "2.png"]
    assert len({i["sha256"] for i in images}) == 3


async def test_idempotency_key_returns_the_same_generation(client: httpx.AsyncClient) -> None:
    body = {"prompt": "same", "width": 32, "height": 32}
    first = await _create(client, body, headers={"Idempotency-Key": "k-1"})
    second = await _create(client, body, headers={"Idempotency-Key": "k-1"})
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = await _create(
        client, {**body, "prompt": "different"}, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_concurrent_idempotent_requests_create_one_job(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = {"prompt": "race", "width": 32, "height": 32}
    answers = await asyncio.gather(
        *(_create(client, body, headers={"Idempotency-Key": "race-1"}) for _ in range(10))
    )
    assert {a.status_code for a in answers} <= {200, 202}
    assert len({a.json()["id"] for a in answers}) == 1
    listed = await runtime.store.list_generations(account_id=None, limit=100)
    assert len(listed) == 1


async def test_list_is_newest_first_with_cursor_pages(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        r = await _create(client, {"prompt": f"p{i}", "width": 16, "height": 16})
        ids.append(r.json()["id"])
    page1 = (await client.get("/v1/generations", params={"limit": 2})).json()
    assert [g["id"] for g in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] is True
    page2 = (
        await client.get("/v1/generations", params={"limit": 2, "cursor": page1["next_cursor"]})
    ).json()
    assert [g["id"] for g in page2["data"]] == ids[::-1][2:4]
    page3 = (
        await client.get("/v1/generations", params={"limit": 2, "cursor": page2["next_cursor"]})
    ).json()
    assert [g["id"] for g in page3["data"]] == ids[:1]
    assert page3["has_more"] is False and page3["next_cursor"] is None


async def test_list_filters_by_status(client: httpx.AsyncClient) -> None:
    r = await _create(client, {"prompt": "x", "width": 16, "height": 16}, headers=WAIT)
    assert r.status_code == 200
    ok = (await client.get("/v1/generations", params={"status": "SUCCEEDED"})).json()
    assert [g["id"] for g in ok["data"]] == [r.json()["id"]]
    failed = (await client.get("/v1/generations", params={"status": "FAILED"})).json()
    assert failed["data"] == []
    bad = await client.get("/v1/generations", params={"status": "DONE"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "status"


async def test_another_accounts_generation_is_not_found(
    client: httpx.AsyncClient, make_account: Any
) -> None:
    _, alice = await make_account("alice")
    _, bob = await make_account("bob")
    r = await _create(client, {"prompt": "alice's", "width": 16, "height": 16}, headers=alice)
    gen_id = r.json()["id"]
    assert (await client.get(f"/v1/generations/{gen_id}", headers=alice)).status_code == 200
    for call in (
        client.get(f"/v1/generations/{gen_id}", headers=bob),
        client.delete(f"/v1/generations/{gen_id}", headers=bob),
        client.get(f"/v1/generations/{gen_id}/events", headers=bob),
    ):
        answer = await call
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    listed = (await client.get("/v1/generations", headers=bob)).json()
    assert listed["data"] == []
    # the admin key sees every account
    assert (await client.get(f"/v1/generations/{gen_id}")).status_code == 200


async def test_failed_generation_reports_the_reason(client: httpx.AsyncClient) -> None:
    r = await _create(client, {"prompt": "nope", "provider": "refusing"}, headers=WAIT)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "FAILED"
    assert body["error"]["code"] == "content_refused"
    assert "injected" in body["error"]["message"]
    assert body["images"] == []
    assert body["route"][-1]["decision"] == "failed"


async def test_transient_failures_are_retried_then_fail(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    from pixelgate.core.routing import RetryPolicy

    runtime.pipeline.retry = RetryPolicy(attempts=3, base_delay_s=0.01)
    r = await _create(client, {"prompt": "flaky", "provider": "flaky"}, headers=WAIT)
    body = r.json()
    assert body["status"] == "FAILED"
    assert body["retry_count"] == 2
    assert body["last_retry_at"] is not None
    events = await runtime.store.events_after(body["id"])
    assert [e.type for e in events].count("retrying") == 2


async def test_fallback_chain_moves_on_after_a_failure(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    from pixelgate.core.routing import RetryPolicy

    runtime.pipeline.retry = RetryPolicy(attempts=1)
    r = await _create(client, {"prompt": "chain", "providers": ["refusing", "fast"]}, headers=WAIT)
    body = r.json()
    assert body["status"] == "SUCCEEDED"
    assert body["provider"] == "fast"
    decisions = [(s["provider"], s["decision"]) for s in body["route"]]
    assert ("refusing", "failed") in decisions and ("fast", "succeeded") in decisions


async def test_cancel_a_pending_generation(settings: Any, make_settings: Any) -> None:
    from pixelgate.api.app import create_app
    from tests.conftest import ADMIN_KEY

    rt = await Runtime.open(settings)  # no worker: the job stays PENDING
    try:
        app = create_app(settings, runtime=rt, run_worker=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as c:
            gen_id = (await _create(c, {"prompt": "later"})).json()["id"]
            pending = (await c.get(f"/v1/generations/{gen_id}")).json()
            assert pending["status"] == "PENDING"
            assert pending["queue_position"] == 0 and pending["eta_ms"] > 0
            r = await c.delete(f"/v1/generations/{gen_id}")
            assert r.status_code == 200
            assert r.json()["status"] == "CANCELED"
            again = await c.delete(f"/v1/generations/{gen_id}")
            assert again.status_code == 409
    finally:
        await rt.close()


async def test_cancel_a_running_generation(client: httpx.AsyncClient, runtime: Runtime) -> None:
    gen_id = (await _create(client, {"prompt": "long", "provider": "slow"})).json()["id"]
    await wait_status(client, gen_id, "PROCESSING")
    r = await client.delete(f"/v1/generations/{gen_id}")
    assert r.status_code in (200, 202)
    body = await wait_status(client, gen_id, "CANCELED")
    assert body["images"] == []
    types = [e.type for e in await runtime.store.events_after(gen_id)]
    assert types[-1] == "canceled"


def _parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


async def test_event_stream_follows_to_completion_and_resumes(
    client: httpx.AsyncClient,
) -> None:
    gen_id = (await _create(client, {"prompt": "stream", "provider": "slow"})).json()["id"]
    r = await client.get(f"/v1/generations/{gen_id}/events", timeout=20)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(r.text)
    types = [e["event"] for e in events]
    assert types[0] == "queued" and types[-1] == "succeeded"
    assert {"started", "provider_selected", "progress"} <= set(types)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["data"]["generation_id"] == gen_id for e in events)

    resumed = await client.get(
        f"/v1/generations/{gen_id}/events", headers={"Last-Event-ID": str(ids[1])}
    )
    assert [int(e["id"]) for e in _parse_sse(resumed.text)] == ids[2:]
    finished = await client.get(
        f"/v1/generations/{gen_id}/events", headers={"Last-Event-ID": str(ids[-1])}
    )
    assert _parse_sse(finished.text) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "n": "three"}, "n"),
        ({"prompt": "x", "width": 512}, "body"),
        ({"prompt": "x", "format": "bmp"}, "format"),
        ({"prompt": "x", "aspect_ratio": "wide"}, "aspect_ratio"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "surprise": True}, "surprise"),
        ({"prompt": "x", "project": "../etc"}, "project"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    r = await _create(client, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field
    assert error["request_id"] == r.headers["x-request-id"]
    assert error["code"] == "invalid_request"
    assert await runtime.store.list_generations(account_id=None) == []


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"prompt": "x" * 4001}, "prompt", "prompt_too_long"),
        ({"prompt": "x", "provider": "nope"}, "provider", "unknown_provider"),
        ({"prompt": "x", "provider": "openai"}, "provider", "provider_not_configured"),
        ({"prompt": "x", "providers": ["fast", "nope"]}, "providers", "unknown_provider"),
        ({"prompt": "x", "provider": "fast", "model": "dall-e-9"}, "model", "unknown_model"),
        ({"prompt": "x", "n": 11}, "n", "invalid_request"),
        ({"prompt": "x", "width": 9000, "height": 64}, "width", "invalid_request"),
    ],
)
async def test_admission_rejections_write_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], field: str, code: str
) -> None:
    r = await _create(client, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert r.json()["error"]["code"] == code
    assert await runtime.store.list_generations(account_id=None) == []


async def test_malformed_json_is_a_clear_error(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/generations", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert "JSON" in r.json()["error"]["message"]


async def test_missing_or_bad_key_is_401(app: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as anon:
        r = await anon.get("/v1/generations")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        r = await anon.get("/v1/generations", headers={"Authorization": "Bearer pg_wrong"})
        assert r.status_code == 401
        assert "pg_wrong" not in r.text
        assert (await anon.get("/health")).status_code == 200


async def test_revoked_key_stops_working(
    client: httpx.AsyncClient, runtime: Runtime, app: Any
) -> None:
    account = await runtime.store.create_account("temp")
    key_id, plain = await runtime.store.create_key(account.id)
    headers = {"Authorization": f"Bearer {plain}"}
    assert (await client.get("/v1/generations", headers=headers)).status_code == 200
    key_hash = await runtime.store.revoke_key(key_id)
    app.state.key_cache.drop(key_hash)
    assert (await client.get("/v1/generations", headers=headers)).status_code == 401


async def test_a_burst_after_the_key_cache_expired_makes_one_key_lookup(
    client: httpx.AsyncClient, runtime: Runtime, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot route and FastAPI's routes alike: requests that miss the key cache at
    the same moment share one query."""
    records = runtime.services.records
    lookup, looked = records.lookup_key, []

    async def counted(key_hash: str) -> Any:
        looked.append(key_hash)
        return await lookup(key_hash)

    monkeypatch.setattr(records, "lookup_key", counted)
    app.state.key_cache.clear()
    body = {"prompt": "a red fox", "width": 64, "height": 64}
    answers = await asyncio.gather(
        *(client.post("/v1/generations", json=body) for _ in range(10)),
        *(client.get("/v1/generations") for _ in range(10)),
    )
    assert [a.status_code for a in answers] == [202] * 10 + [200] * 10
    assert len(looked) == 1


async def test_request_id_is_kept_when_given(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/generations/gen_missing", headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "trace-42"
    assert r.json()["error"]["request_id"] == "trace-42"


async def test_providers_catalog(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/providers")).json()
    by_name = {p["name"]: p for p in body["data"]}
    assert by_name["fast"]["configured"] is True
    assert by_name["openai"]["configured"] is False
    assert body["default_chain"] == ["fast"]
    model = by_name["fast"]["models"][0]
    assert model["capabilities"]["max_n"] >= 1


async def test_health(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "healthy" and body["service"] == "image-gen"
    assert body["checks"]["database"]["status"] == "ok"


async def _raw_get(app: Any, raw_path: bytes) -> tuple[int, dict[str, Any]]:
    """GET with the path exactly as sent (an HTTP client would normalise ``..`` away)."""
    from urllib.parse import unquote

    path = unquote(raw_path.decode("latin-1"))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": raw_path, "root_path": "",
        "query_string": b"", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"testserver")],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


@pytest.mark.parametrize(
    "raw",
    [
        b"/files/../pixelgate.db",
        b"/files/..%2Fpixelgate.db",
        b"/files/ai/../../x",
        b"/files/%2e%2e/pixelgate.db",
        b"/files/images/../../pixelgate.db",
        b"/files/%2e%2e%2f%2e%2e%2fetc/passwd",
    ],
)
async def test_files_cannot_escape_the_storage_root(
    app: Any, settings: Any, raw: bytes
) -> None:
    prize = settings.data_dir / "pixelgate.db"
    if not prize.exists():  # scale-out keeps no SQLite file: put a prize where it would be
        prize.parent.mkdir(parents=True, exist_ok=True)
        prize.write_bytes(b"prize")
    status, body = await _raw_get(app, raw)
    assert status == 404, (raw, body)
    assert body["error"]["code"] == "not_found"


async def test_a_stored_image_is_served_from_its_file(client: httpx.AsyncClient) -> None:
    r = await _create(client, {"prompt": "served", "width": 32, "height": 32}, headers=WAIT)
    url = r.json()["images"][0]["url"]
    image = await client.get(url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.headers["content-type"] == "image/png"
    assert "immutable" in image.headers["cache-control"]
    assert image.headers["content-length"] == str(len(image.content))


async def test_a_synchronous_wait_reads_the_row_only_when_the_job_may_have_ended(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    status_of = runtime.store.status_of

    async def counted(gen_id: str) -> tuple[str, bool] | None:
        reads.append(gen_id)
        return await status_of(gen_id)

    monkeypatch.setattr(runtime.store, "status_of", counted)
    r = await _create(client, {"prompt": "slow with progress", "provider": "slow"}, headers=WAIT)
    assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
    types = [e.type for e in await runtime.store.events_after(r.json()["id"])]
    assert types.count("progress") >= 1 and len(types) >= 5, types
    # once on arrival and once after the final notification; progress, provider_selected
    # and the other events in between wake the waiter without a read
    assert len(reads) <= 3, reads


async def test_running_events_are_group_committed_in_order_before_the_result(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    r = await _create(client, {"prompt": "slow, in steps", "provider": "slow"})
    gen_id = r.json()["id"]
    seen: list[str] = []
    for _ in range(100):  # provider_selected is written while the job still runs
        seen = [e.type for e in await runtime.store.events_after(gen_id)]
        if "provider_selected" in seen:
            break
        await asyncio.sleep(0.05)
    assert "provider_selected" in seen and "succeeded" not in seen, seen
    body = await wait_status(client, gen_id, "SUCCEEDED")
    events = await runtime.store.events_after(gen_id)
    types = [e.type for e in events]
    assert types[0] == "queued" and types[-1] == "succeeded", types
    assert types.index("started") < types.index("provider_selected") < types.index("progress")
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert body["provider"] == "slow" and body["progress"] == 100


async def test_a_quick_job_writes_its_running_events_with_its_result(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    r = await _create(client, {"prompt": "quick"}, headers=WAIT)
    assert r.status_code == 200, r.text
    # no wait: provider_selected was taken into the finishing transaction
    types = [e.type for e in await runtime.store.events_after(r.json()["id"])]
    assert types == ["queued", "started", "provider_selected", "succeeded"], types
