"""Input images: reference images by URL, edits by upload or URL, masks, routing by capability."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pixelgate.api.app import create_app
from pixelgate.config import Settings
from pixelgate.runtime import Runtime
from tests.conftest import admin_client
from tests.fakes import (
    CapturingProvider,
    LoopbackServer,
    png_bytes,
    register_capturing_provider,
)

WAIT = {"Prefer": "wait=10"}
PROVIDERS = {
    "cap": {"kind": "capture"},
    "plain": {"kind": "capture", "edit": False, "reference": False},
}


@pytest.fixture
def image_host() -> Any:
    ref = png_bytes(40, 30, (10, 200, 10))
    routes = {
        "/ref.png": lambda r: (200, {"Content-Type": "image/png"}, ref),
        "/mask.png": lambda r: (
            200,
            {"Content-Type": "image/png"},
            png_bytes(40, 30, (0, 0, 0, 0)),
        ),
        "/text": lambda r: (200, {"Content-Type": "text/plain"}, b"not an image"),
        "/redirect": lambda r: (302, {"Location": "http://10.0.0.1/ref.png"}, b""),
    }
    with LoopbackServer(routes) as server:
        server.ref = ref  # type: ignore[attr-defined]
        yield server


async def _open(settings: Settings, *, worker: bool = True) -> tuple[Runtime, httpx.AsyncClient]:
    runtime = await Runtime.open(settings)
    if worker:
        await runtime.start_worker()
    app = create_app(settings, runtime=runtime, run_worker=False)
    client = admin_client(app)
    return runtime, client


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    register_capturing_provider(monkeypatch)
    settings = make_settings(
        providers=PROVIDERS, routing={"default": ["plain", "cap"]}, fetch_allow_hosts=["127.0.0.1"]
    )
    runtime, client = await _open(settings)
    try:
        yield runtime, client
    finally:
        await client.aclose()
        await runtime.close()


@pytest.fixture
async def strict_env(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """No fetch allow-list: only public hosts may be fetched."""
    register_capturing_provider(monkeypatch)
    settings = make_settings(providers=PROVIDERS, routing={"default": ["cap"]})
    runtime, client = await _open(settings)
    try:
        yield runtime, client
    finally:
        await client.aclose()
        await runtime.close()


def _captured(name: str = "cap") -> list[Any]:
    return CapturingProvider.requests.get(name, [])


async def test_reference_image_from_an_allow_listed_host_reaches_the_provider(
    env: tuple[Runtime, httpx.AsyncClient], image_host: LoopbackServer
) -> None:
    _, client = env
    url = image_host.url("/ref.png")
    r = await client.post(
        "/v1/generations",
        json={"prompt": "in this style", "reference_image_url": url, "width": 64, "height": 64},
        headers=WAIT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCEEDED", body["error"]
    assert body["provider"] == "cap"
    skipped = [s for s in body["route"] if s.get("provider") == "plain"]
    assert skipped and skipped[0]["reason"] == "no reference image support"
    [request] = _captured()
    assert request.reference_image == image_host.ref  # type: ignore[attr-defined]
    assert request.edit_image is None and request.mask is None
    [fetch] = image_host.received
    assert fetch.method == "GET" and fetch.headers["Host"] == f"127.0.0.1:{image_host.port}"


@pytest.mark.parametrize(
    "path_or_url",
    [
        "loopback",  # not allow-listed here
        "http://10.0.0.1/ref.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/ref.png",
    ],
)
async def test_unsafe_literal_reference_url_is_refused_at_admission(
    strict_env: tuple[Runtime, httpx.AsyncClient],
    image_host: LoopbackServer,
    path_or_url: str,
) -> None:
    _, client = strict_env
    url = image_host.url("/ref.png") if path_or_url == "loopback" else path_or_url
    r = await client.post(
        "/v1/generations", json={"prompt": "x", "reference_image_url": url}, headers=WAIT
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("unsafe_url", "reference_image_url")
    assert (await client.get("/v1/generations")).json()["data"] == []
    assert image_host.received == [] and _captured() == []


async def test_a_host_name_resolving_to_loopback_fails_the_generation_at_fetch_time(
    strict_env: tuple[Runtime, httpx.AsyncClient],
    image_host: LoopbackServer,
) -> None:
    _, client = strict_env
    url = image_host.url("/ref.png", host="localhost")
    r = await client.post(
        "/v1/generations", json={"prompt": "x", "reference_image_url": url}, headers=WAIT
    )
    body = r.json()
    assert body["status"] == "FAILED"
    assert body["error"]["code"] == "unsafe_url"
    assert "reference_image_url" in body["error"]["message"]
    assert image_host.received == [] and _captured() == []


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/missing.png", "reference_image_unavailable"),
        ("/text", "reference_image_invalid"),
        ("/redirect", "unsafe_url"),  # allow-listed host redirecting to a private one
    ],
)
async def test_reference_failures_are_named(
    env: tuple[Runtime, httpx.AsyncClient], image_host: LoopbackServer, path: str, code: str
) -> None:
    _, client = env
    r = await client.post(
        "/v1/generations",
        json={"prompt": "x", "reference_image_url": image_host.url(path)},
        headers=WAIT,
    )
    body = r.json()
    assert (body["status"], body["error"]["code"]) == ("FAILED", code)
    assert _captured() == []


async def test_reference_url_syntax_is_checked_at_admission(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    for url in ("ftp://example.com/a.png", "file:///etc/passwd", "http://u:p@example.com/"):
        r = await client.post("/v1/generations", json={"prompt": "x", "reference_image_url": url})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "reference_image_url"
    listed = await runtime.store.list_generations(account_id=None)
    assert listed == []


async def test_edit_by_upload_passes_image_and_mask_to_an_edit_capable_provider(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    image, mask = png_bytes(48, 32), png_bytes(48, 32, (0, 0, 0, 0))
    r = await client.post(
        "/v1/generations/edits",
        files={"image": ("in.png", image, "image/png"), "mask": ("m.png", mask, "image/png")},
        data={"request": json.dumps({"prompt": "add a hat", "metadata": {"k": "v"}})},
        headers=WAIT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCEEDED", body["error"]
    assert body["provider"] == "cap"
    assert body["images"][0]["width"] == 48 and body["images"][0]["height"] == 32
    key = body["request"]["input_image_key"]
    assert key.startswith(f"inputs/{(await runtime.local_caller()).account_id}/")
    assert (await runtime.storage.get(key)).data == image
    [request] = _captured()
    assert request.edit_image == image and request.mask == mask
    reasons = {s["provider"]: s.get("reason") for s in body["route"]}
    assert reasons["plain"] == "no edit support"


async def test_edit_form_fields_work_without_a_json_part(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    r = await client.post(
        "/v1/generations/edits",
        files={"image": ("in.png", png_bytes(), "image/png")},
        data={"prompt": "variation", "n": "2", "width": "64", "height": "48", "format": "webp"},
        headers=WAIT,
    )
    body = r.json()
    assert body["status"] == "SUCCEEDED", body
    assert [(i["width"], i["height"], i["format"]) for i in body["images"]] == [
        (64, 48, "webp"),
        (64, 48, "webp"),
    ]


async def test_edit_by_url(
    env: tuple[Runtime, httpx.AsyncClient], image_host: LoopbackServer
) -> None:
    _, client = env
    r = await client.post(
        "/v1/generations",
        json={
            "prompt": "edit it",
            "image_url": image_host.url("/ref.png"),
            "mask_url": image_host.url("/mask.png"),
        },
        headers=WAIT,
    )
    body = r.json()
    assert body["status"] == "SUCCEEDED", body["error"]
    [request] = _captured()
    assert request.edit_image == image_host.ref  # type: ignore[attr-defined]
    assert request.mask is not None


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"mask": ("m.png", png_bytes(), "image/png")}, {"prompt": "x"}, "image"),
        ({"image": ("a.txt", b"hello", "text/plain")}, {"prompt": "x"}, "image"),
        (
            {
                "image": ("a.png", png_bytes(32, 32), "image/png"),
                "mask": ("m.png", png_bytes(16, 16), "image/png"),
            },
            {"prompt": "x"},
            "mask",
        ),
        ({"image": ("a.png", png_bytes(), "image/png")}, {}, "prompt"),
        (
            {"image": ("a.png", png_bytes(), "image/png")},
            {"prompt": "x", "input_image_key": "inputs/acct_x/2026/01/inp_abc.png"},
            "input_image_key",
        ),
    ],
)
async def test_bad_edit_uploads_are_refused_and_charge_nothing(
    env: tuple[Runtime, httpx.AsyncClient], files: dict[str, Any], data: dict[str, str], field: str
) -> None:
    runtime, client = env
    r = await client.post("/v1/generations/edits", files=files, data=data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert await runtime.store.list_generations(account_id=None) == []


async def test_mask_without_image_and_foreign_inputs_are_refused(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    r = await client.post(
        "/v1/generations", json={"prompt": "x", "mask_url": "https://example.com/m.png"}
    )
    assert r.status_code == 422
    r = await client.post(
        "/v1/generations",
        json={"prompt": "x", "input_image_key": "inputs/acct_someoneelse/2026/01/inp_abc.png"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "input_not_found"


async def test_uploaded_input_survives_a_restart(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_capturing_provider(monkeypatch)
    settings = make_settings(providers=PROVIDERS, routing={"default": ["cap"]})
    image = png_bytes(20, 20, (1, 2, 3))
    runtime, client = await _open(settings, worker=False)
    try:
        r = await client.post(
            "/v1/generations/edits",
            files={"image": ("in.png", image, "image/png")},
            data={"prompt": "later"},
        )
        assert r.status_code == 202, r.text
        gen_id = r.json()["id"]
    finally:
        await client.aclose()
        await runtime.close()
    assert _captured() == []
    runtime, client = await _open(settings)  # a new process picks the job up
    try:
        view = await runtime.pipeline.wait(gen_id, 10)
        assert view.status == "SUCCEEDED", view.error_message
        [request] = _captured()
        assert request.edit_image == image
    finally:
        await client.aclose()
        await runtime.close()
