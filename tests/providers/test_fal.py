"""fal.ai adapter against a fake queue and sync API (PROVIDERS.md §6)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.fal import FalProvider, FalSettings
from tests.fakes import FakeJobContext
from tests.providers.kit import (
    PNG,
    SECRET,
    FakeServer,
    assert_secret_absent,
    b64,
    hang,
    json_body,
    reply,
)

QUEUE = "https://queue.fal.run"
REQ_ID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
# The sub-path quirk: fal-ai/flux/schnell's request URLs live under fal-ai/flux.
ROOT = f"/fal-ai/flux/requests/{REQ_ID}"
JOB_ID = ROOT.lstrip("/")
IMG = "https://v3.fal.media/files/rabbit/abc.jpeg"


def submitted(root: str = ROOT) -> dict[str, Any]:
    return {
        "request_id": REQ_ID,
        "response_url": f"{QUEUE}{root}",
        "status_url": f"{QUEUE}{root}/status",
        "cancel_url": f"{QUEUE}{root}/cancel",
    }


def status(state: str, **fields: Any) -> dict[str, Any]:
    return {"status": state, "request_id": REQ_ID, **submitted(), **fields}


def result(n: int = 1, nsfw: list[bool] | None = None, url: str = IMG) -> dict[str, Any]:
    return {
        "images": [
            {"url": url, "width": 1024, "height": 768, "content_type": "image/jpeg"}
            for _ in range(n)
        ],
        "timings": {"inference": 0.3},
        "seed": 1234,
        "has_nsfw_concepts": nsfw if nsfw is not None else [False] * n,
        "prompt": "a fox",
    }


def make(server: FakeServer, **settings: Any) -> FalProvider:
    options: dict[str, Any] = {"api_key": SecretStr(SECRET), "poll_interval_s": 0.01}
    options.update(settings)
    return FalProvider("fal", FalSettings(**options), server.client())


def authorized(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Key {SECRET}"


def queue_handler(
    states: list[dict[str, Any]],
    final: httpx.Response,
    ctx_ref: list[FakeJobContext],
    resumed: bool = False,
) -> Any:
    pending = iter(states)

    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)
        path = request.url.path
        assert request.url.host == "queue.fal.run"
        assert "/schnell/requests" not in path, "status/result URLs drop the app's sub path"
        if request.method == "POST":
            assert path == "/fal-ai/flux/schnell"
            data = json_body(request)
            assert data["prompt"] == "a fox"
            assert data["image_size"] == {"width": 1024, "height": 768}
            assert isinstance(data["num_images"], int)
            assert data["output_format"] in ("jpeg", "png")
            return reply(200, submitted())
        if path == f"{ROOT}/status":
            assert request.method == "GET"
            assert request.url.params["logs"] == "1"
            # saved before polling (or, on resume, known from the earlier run)
            assert ctx_ref[0].saved_jobs == ([] if resumed else [JOB_ID])
            return reply(200, next(pending))
        if path == ROOT:
            return final
        return reply(404, {"detail": "Not Found"})

    return handler


async def test_queue_submit_status_result_with_queue_position_progress() -> None:
    states = [
        status("IN_QUEUE", queue_position=2),
        status("IN_QUEUE", queue_position=1),
        status("IN_PROGRESS", logs=[{"message": "step 2/4", "level": "INFO"}]),
        status("COMPLETED", logs=[], metrics={"inference_time": 1.2}),
    ]
    ctx_ref: list[FakeJobContext] = []
    server = FakeServer(queue_handler(states, reply(200, result(n=2)), ctx_ref))
    ctx = server.context()
    ctx_ref.append(ctx)
    req = ProviderRequest("a fox", model="fal-ai/flux/schnell", n=2, width=1024, height=768)
    res = await make(server).generate(req, ctx)
    assert [img.url for img in res.images] == [IMG, IMG]
    assert res.images[0].seed == 1234
    assert res.provider_job_id == JOB_ID
    assert ctx.saved_jobs == [JOB_ID]
    assert ctx.progress_reports == [
        (8, "queue position 2"),
        (9, "queue position 1"),
        (50, "step 2/4"),
    ]
    assert res.cost_usd == Decimal("0.006")


async def test_resume_polls_the_saved_request_without_submitting() -> None:
    states = [status("IN_PROGRESS"), status("COMPLETED")]
    ctx_ref: list[FakeJobContext] = []
    server = FakeServer(queue_handler(states, reply(200, result()), ctx_ref, resumed=True))
    ctx = server.context(provider_job_id=JOB_ID)
    ctx_ref.append(ctx)
    req = ProviderRequest("a fox", model="fal-ai/flux/schnell", width=1024, height=768)
    res = await make(server).generate(req, ctx)
    assert res.images[0].url == IMG
    assert server.seen("POST") == []
    assert [r.url.path for r in server.requests] == [f"{ROOT}/status"] * 2 + [ROOT]


async def test_sync_mode_posts_to_fal_run_and_decodes_data_uris() -> None:
    uri = "data:image/png;base64," + b64(PNG)

    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)
        assert request.method == "POST"
        assert str(request.url) == "https://fal.run/fal-ai/nano-banana"
        data = json_body(request)
        assert data == {
            "prompt": "a fox",
            "aspect_ratio": "16:9",
            "num_images": 1,
            "output_format": "png",
            "seed": 5,
        }
        return reply(200, {"images": [{"url": uri, "content_type": "image/png"}]})

    server = FakeServer(handler)
    ctx = server.context()
    req = ProviderRequest("a fox", model="fal-ai/nano-banana", width=1600, height=900, seed=5)
    res = await make(server, mode="sync").generate(req, ctx)
    assert res.images[0].data == PNG
    assert res.images[0].content_type == "image/png"
    assert ctx.saved_jobs == []


async def test_nsfw_flagged_images_are_dropped() -> None:
    server = FakeServer(lambda r: reply(200, result(n=2, nsfw=[True, False])))
    res = await make(server, mode="sync").generate(ProviderRequest("x", n=2), server.context())
    assert len(res.images) == 1


async def test_all_images_nsfw_is_refused() -> None:
    server = FakeServer(lambda r: reply(200, result(nsfw=[True])))
    with pytest.raises(Refused):
        await make(server, mode="sync").generate(ProviderRequest("x"), server.context())


async def test_422_detail_list_is_invalid_request_with_the_messages() -> None:
    detail = [
        {"loc": ["body", "num_images"], "msg": "ensure this value is <= 4", "type": "value_error"},
        {"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"},
    ]
    server = FakeServer(lambda r: reply(422, {"detail": detail}))
    with pytest.raises(InvalidRequest) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert "body.num_images: ensure this value is <= 4" in info.value.message
    assert "body.prompt: field required" in info.value.message


async def test_422_content_policy_is_refused() -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]
    server = FakeServer(lambda r: reply(422, {"detail": detail}))
    with pytest.raises(Refused):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_failed_job_completes_then_its_result_carries_the_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(200, submitted())
        if request.url.path.endswith("/status"):
            return reply(200, status("COMPLETED", error="Internal error", error_type="runner"))
        return reply(500, {"detail": "Internal error"})

    server = FakeServer(handler)
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_cancel_puts_to_the_cancel_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        authorized(request)
        return reply(202, {"status": "CANCELLATION_REQUESTED"})

    server = FakeServer(handler)
    await make(server).cancel(JOB_ID)
    assert [(r.method, r.url.path) for r in server.requests] == [("PUT", f"{ROOT}/cancel")]


async def test_job_past_timeout_is_canceled() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(200, submitted())
        if request.method == "PUT":
            return reply(202, {"status": "CANCELLATION_REQUESTED"})
        return reply(202, status("IN_QUEUE", queue_position=40))

    server = FakeServer(handler)
    ctx = server.context()
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest("x"), ctx)
    assert ctx.saved_jobs == [JOB_ID]
    assert len(server.seen("PUT", f"{ROOT}/cancel")) == 1


async def test_hanging_sync_call_times_out() -> None:
    server = FakeServer(hang())
    with pytest.raises(ProviderTimeout):
        await make(server, mode="sync", timeout_s=0.1).generate(
            ProviderRequest("x"), server.context()
        )


async def test_user_deadline_504_is_timeout() -> None:
    server = FakeServer(
        lambda r: reply(
            504, {"detail": "timed out"}, headers={"x-fal-request-timeout-type": "user"}
        )
    )
    with pytest.raises(ProviderTimeout):
        await make(server, mode="sync").generate(ProviderRequest("x"), server.context())


async def test_429_with_retry_after() -> None:
    server = FakeServer(lambda r: reply(429, {"detail": "Too many"}, headers={"Retry-After": "3"}))
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after == 3


async def test_401_is_auth_error_without_the_key() -> None:
    server = FakeServer(lambda r: reply(401, {"detail": f"No user found for Key {SECRET}"}))
    with pytest.raises(ProviderAuthError) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert_secret_absent(info.value)


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_malformed_submit_body_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(200, content=b"{not json"))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_unknown_status_value_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(200, submitted())
        return reply(200, {"status": "EXPLODED"})

    server = FakeServer(handler)
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_key_is_never_sent_to_a_foreign_status_url() -> None:
    evil = "https://evil.example/steal"

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "queue.fal.run", request.url
        if request.method == "POST":
            return reply(
                200,
                {
                    "request_id": REQ_ID,
                    "status_url": evil,
                    "response_url": evil,
                    "cancel_url": evil,
                },
            )
        if request.url.path.endswith("/status"):
            return reply(200, status("COMPLETED"))
        return reply(200, result())

    server = FakeServer(handler)
    req = ProviderRequest("x", model="fal-ai/flux/schnell")
    assert (await make(server).generate(req, server.context())).images


def test_catalog_and_megapixel_pricing() -> None:
    provider = make(FakeServer(lambda r: reply(500)))
    assert {"fal-ai/flux/schnell", "fal-ai/flux/dev", "fal-ai/nano-banana"} <= set(provider.models)
    big = ProviderRequest("x", model="fal-ai/flux/schnell", width=2048, height=2048)
    assert provider.price(big) == Decimal("0.012")
    assert provider.model_info("fal-ai/some/app").price_usd == Decimal("0.05")
