"""End to end against a real ``pixelgate serve``: native API, SSE, files and the seed routes."""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.acceptance.conftest import (
    Launcher,
    Server,
    placeholder_config,
    stream_events,
)

CORE_EVENTS = ("queued", "started", "provider_selected", "succeeded")


@pytest.fixture(scope="module")
def server(module_launcher: Launcher) -> Server:
    """One server for the module: these tests only add their own generations."""
    return module_launcher.start(config=placeholder_config(latency_ms=300))


def _assert_request_id(response: httpx.Response) -> None:
    rid = response.headers.get("x-request-id")
    assert rid, f"{response.request.method} {response.request.url} has no X-Request-ID"


def _download(server: Server, url: str) -> httpx.Response:
    assert url.startswith(f"{server.base_url}/files/"), url
    # /files/... needs no key
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    _assert_request_id(r)
    return r


def test_native_generation_sse_and_file(server: Server) -> None:
    api = server.client()
    r = api.post("/v1/generations", json={
        "prompt": "a lighthouse in a storm", "width": 320, "height": 200, "format": "webp",
    })
    assert r.status_code == 202, r.text
    _assert_request_id(r)
    gen_id = r.json()["id"]
    location = r.headers["location"]
    assert location.endswith(f"/v1/generations/{gen_id}")
    assert r.json()["status"] in ("PENDING", "PROCESSING")

    response, events = stream_events(api, gen_id, timeout=20)
    assert response.headers["content-type"].startswith("text/event-stream")
    _assert_request_id(response)
    types = [e["event"] for e in events]
    for wanted in CORE_EVENTS:
        assert wanted in types, f"missing {wanted!r} event in {types}"
    assert types[0] == "queued", types
    assert types[-1] == "succeeded", types
    assert types.count("succeeded") == 1, types
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"event ids not increasing: {ids}"
    assert all(e["data"]["generation_id"] == gen_id for e in events)
    assert types.index("started") < types.index("provider_selected") < types.index("succeeded")

    # the generation, then its image
    r = api.get(location)
    assert r.status_code == 200, r.text
    _assert_request_id(r)
    gen = r.json()
    assert gen["status"] == "SUCCEEDED"
    assert gen["error"] is None
    assert gen["completed_at"]
    assert len(gen["images"]) == 1, gen["images"]
    image = gen["images"][0]
    assert (image["width"], image["height"], image["format"]) == (320, 200, "webp")

    f = _download(server, image["url"])
    assert f.headers["content-type"] == "image/webp"
    cache_control = f.headers.get("cache-control", "")
    assert "immutable" in cache_control and "max-age=31536000" in cache_control, cache_control
    assert hashlib.sha256(f.content).hexdigest() == image["sha256"]
    assert len(f.content) == image["bytes"]
    with Image.open(io.BytesIO(f.content)) as img:
        assert img.format == "WEBP"
        assert img.size == (320, 200)
        img.load()

    # SSE resume: after the first event only later ones come
    first_id = events[0]["id"]
    response, resumed = stream_events(api, gen_id, last_event_id=first_id, timeout=10)
    assert resumed, "resumed stream sent nothing"
    assert [e["id"] for e in resumed] == [e["id"] for e in events[1:]]
    assert all(int(e["id"]) > int(first_id) for e in resumed)
    assert "queued" not in [e["event"] for e in resumed]

    # resuming from the middle (after provider_selected)
    mid = events[[e["event"] for e in events].index("provider_selected")]["id"]
    _, tail = stream_events(api, gen_id, last_event_id=mid, timeout=10)
    assert [e["id"] for e in tail] == [e["id"] for e in events if int(e["id"]) > int(mid)]
    assert tail[-1]["event"] == "succeeded"


def test_request_id_kept_and_on_errors(server: Server) -> None:
    api = server.client()
    r = api.get("/v1/generations", headers={"X-Request-ID": "my-trace-123"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "my-trace-123"

    anon = server.client(key=None)
    for method, path in (("GET", "/v1/generations"), ("POST", "/generate"),
                         ("POST", "/api/generate"), ("POST", "/images/generate")):
        r = anon.request(method, path, json={"prompt": "x"})
        assert r.status_code == 401, (path, r.status_code, r.text)
        _assert_request_id(r)
    r = anon.get("/v1/generations")
    body = r.json()
    assert body["error"]["code"]
    assert body["error"]["request_id"] == r.headers["x-request-id"]

    r = api.get("/v1/generations/gen_doesnotexist")
    assert r.status_code == 404
    _assert_request_id(r)
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]

    r = anon.get("/health")
    assert r.status_code == 200
    _assert_request_id(r)
    assert r.json()["status"] == "healthy"

    r = anon.get("/files/ai/nope/missing.png")
    assert r.status_code == 404
    _assert_request_id(r)


def test_seed_curl_examples(
    server: Server, run_cli: Callable[..., Any]
) -> None:
    cli_env = {k: v for k, v in server.env.items() if k.startswith("PIXELGATE_")}
    # FREE (the default tier) allows one generation a day, as in seed 004
    created = run_cli(["accounts", "create", "production", "--tier", "PRO"], env=cli_env,
                      check=True)
    assert "production" in created.stdout
    made = run_cli(["keys", "create", "--account", "production"], env=cli_env, check=True)
    key = made.stdout.strip().splitlines()[-1].strip()
    assert len(key) >= 20 and " " not in key, made.stdout
    assert key not in made.stderr

    api = server.client(key=key)

    # seed 000: synchronous POST /generate
    r = api.post("/generate", json={
        "prompt": "A beautiful sunset over mountains",
        "instance_id": "production",
        "project_id": "test",
    })
    assert r.status_code == 200, r.text
    _assert_request_id(r)
    body = r.json()
    assert body["success"] is True
    assert body["request_id"] == r.headers["x-request-id"]
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", body["timestamp"]), body
    assert re.fullmatch(r"\d+x\d+", body["metadata"]["dimensions"]), body["metadata"]
    assert body["metadata"]["provider"] == "fast"
    assert body["image_url"].endswith(body["r2_path"])
    assert "/production/test/" in f"/{body['r2_path']}", body["r2_path"]
    f = _download(server, body["image_url"])
    with Image.open(io.BytesIO(f.content)) as img:
        assert f"{img.width}x{img.height}" == body["metadata"]["dimensions"]

    # seed 000: another account's instance is 404 for this key
    r = api.post("/generate", json={"prompt": "x", "instance_id": "nobody-here"})
    assert r.status_code == 404, r.text
    _assert_request_id(r)

    # seed 004: POST /api/generate → 202 + jobId, then poll until SUCCEEDED
    r = api.post("/api/generate", json={
        "prompt": "A test image", "settings": {"width": 512, "height": 512},
    })
    assert r.status_code == 202, r.text
    _assert_request_id(r)
    job = r.json()
    for field in ("jobId", "status", "estimatedProcessingTime", "creditsUsed", "createdAt"):
        assert field in job, (field, job)
    assert job["status"] in ("PENDING", "PROCESSING")
    deadline = time.monotonic() + 20
    while True:
        r = api.get(f"/api/generate/{job['jobId']}")
        assert r.status_code == 200, r.text
        _assert_request_id(r)
        generation = r.json()["generation"]
        assert generation["status"] in ("PENDING", "PROCESSING", "SUCCEEDED"), generation
        if generation["status"] == "SUCCEEDED":
            break
        assert time.monotonic() < deadline, f"seed 004 job not done: {generation}"
        time.sleep(0.1)
    assert generation["id"] == job["jobId"]
    assert generation["progress"] == 100
    f = _download(server, generation["resultImageUrl"])
    with Image.open(io.BytesIO(f.content)) as img:
        assert img.size == (512, 512)

    # seed 001: POST /images/generate, the README example
    r = api.post("/images/generate", json={
        "prompt": "A beautiful sunset over mountains",
        "keyword": "landscape",
        "articleId": "article-123",
        "width": 1024,
        "height": 768,
        "style": "photorealistic",
    })
    assert r.status_code == 200, r.text
    _assert_request_id(r)
    body = r.json()
    assert body["success"] is True, body
    assert body["provider"] == "fast"
    assert isinstance(body["elapsedMs"], int) and body["elapsedMs"] >= 0
    assert body["url"].endswith(".webp"), body["url"]
    f = _download(server, body["url"])
    assert f.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(f.content)) as img:
        assert img.format == "WEBP"
        assert img.size == (1024, 768)

    # the key sees its own generations only; the admin sees them too
    mine = api.get("/v1/generations", params={"limit": 100})
    assert mine.status_code == 200
    assert len(mine.json()["data"]) == 3


def _idle_then_reuse(server: Server, idle_s: float) -> int | str:
    """One request, ``idle_s`` of silence, then a second request on the same connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/health/live")
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        time.sleep(idle_s)
        conn.request("GET", "/health/live")
        second = conn.getresponse()
        second.read()
        return second.status
    except (http.client.RemoteDisconnected, ConnectionError) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_an_idle_connection_outlives_the_clients_own_idle_timeout(
    server: Server, module_launcher: Launcher
) -> None:
    # longer than uvicorn's default (5 s) and httpx's keep-alive expiry (5 s)
    assert _idle_then_reuse(server, 6.0) == 200
    short = module_launcher.start(
        config=placeholder_config(latency_ms=0), env={"PIXELGATE_KEEP_ALIVE_S": "1"}
    )
    assert _idle_then_reuse(short, 2.5) != 200  # the setting is what keeps it open
