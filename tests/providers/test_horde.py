"""AI Horde adapter against a fake v2 API (async submit, check, status, delete)."""

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
from pixelgate.providers.horde import ANONYMOUS_KEY, HordeProvider, HordeSettings
from tests.fakes import FakeJobContext
from tests.providers.kit import (
    SECRET,
    FakeServer,
    assert_secret_absent,
    b64,
    hang,
    json_body,
    reply,
)

JOB = "4a3f5a8e-1c2b-4d5e-8f90-123456789abc"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\x00" * 14
R2 = "https://cdn.aihorde.net/stable/4a3f5a8e.webp?X-Amz-Signature=abc"
CHECK = f"/api/v2/generate/check/{JOB}"
STATUS = f"/api/v2/generate/status/{JOB}"


def check(**fields: Any) -> dict[str, Any]:
    base = {
        "finished": 0, "processing": 0, "restarted": 0, "waiting": 1, "done": False,
        "faulted": False, "wait_time": 30, "queue_position": 0, "kudos": 10.0,
        "is_possible": True,
    }  # fmt: skip
    return {**base, **fields}


def generation(img: str = R2, **fields: Any) -> dict[str, Any]:
    return {
        "img": img,
        "seed": "3141",
        "id": "img-1",
        "censored": False,
        "model": "Deliberate",
        "worker_id": "w-1",
        "worker_name": "gpu-box",
        "state": "ok",
        "gen_metadata": [],
        **fields,
    }


def done(*generations: dict[str, Any]) -> dict[str, Any]:
    return {
        **check(done=True, finished=len(generations), waiting=0),
        "generations": list(generations),
    }


def make(server: FakeServer, **settings: Any) -> HordeProvider:
    options: dict[str, Any] = {"poll_interval_s": 0.01}
    options.update(settings)
    return HordeProvider("horde", HordeSettings(**options), server.client())


def identified(request: httpx.Request, key: str = ANONYMOUS_KEY) -> None:
    assert request.url.host == "aihorde.net"
    assert request.headers["apikey"] == key
    client_agent = request.headers["client-agent"]
    assert client_agent.count(":") >= 2  # name:version:contact


def flow(checks: list[dict[str, Any]], final: dict[str, Any], ctx_ref: list[FakeJobContext]) -> Any:
    pending = iter(checks)

    def handler(request: httpx.Request) -> httpx.Response:
        identified(request)
        path = request.url.path
        if request.method == "POST":
            assert path == "/api/v2/generate/async"
            data = json_body(request)
            assert data["prompt"] == "a lighthouse ### fog, blur"
            params = data["params"]
            assert params["width"] == 1024 and params["height"] == 576  # multiples of 64
            assert params["n"] == 2 and isinstance(params["n"], int)
            assert params["seed"] == "99"  # the Horde takes the seed as a string
            assert isinstance(params["steps"], int) and isinstance(params["sampler_name"], str)
            assert data["models"] == ["Deliberate"]
            assert data["r2"] is True and data["nsfw"] is False and data["censor_nsfw"] is True
            return reply(202, {"id": JOB, "kudos": 12.0})
        assert request.method == "GET"
        if path == CHECK:
            assert ctx_ref[0].provider_job_id == JOB
            return reply(200, next(pending))
        assert path == STATUS
        return reply(200, final)

    return handler


async def test_queue_then_processing_then_done_with_r2_urls() -> None:
    checks = [
        check(queue_position=3, wait_time=40),
        check(queue_position=1, wait_time=12),
        check(processing=2, waiting=0, queue_position=0),
        check(finished=1, processing=1, waiting=0),
        check(finished=2, waiting=0, done=True),
    ]
    ctx_ref: list[FakeJobContext] = []
    server = FakeServer(flow(checks, done(generation(), generation(seed="42")), ctx_ref))
    ctx = server.context()
    ctx_ref.append(ctx)
    req = ProviderRequest(
        "a lighthouse", model="Deliberate", negative_prompt="fog, blur", n=2, width=1000,
        height=600, seed=99,
    )  # fmt: skip
    res = await make(server).generate(req, ctx)
    assert [img.url for img in res.images] == [R2, R2]
    assert [img.seed for img in res.images] == [3141, 42]
    assert res.images[0].content_type == "image/webp"
    assert res.provider_job_id == JOB
    assert res.cost_usd == Decimal("0")
    assert ctx.saved_jobs == [JOB]
    assert ctx.progress_reports == [
        (6, "queue position 3, about 40 s"),
        (8, "queue position 1, about 12 s"),
        (10, "0/2 done, 2 processing"),
        (52, "1/2 done, 1 processing"),
    ]
    # The heavily rate-limited status route is read once, when done.
    assert len(server.seen("GET", STATUS)) == 1


async def test_base64_images_when_r2_is_off() -> None:
    encoded = b64(WEBP)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json_body(request)["r2"] is False
            return reply(202, {"id": JOB})
        if request.url.path == CHECK:
            return reply(200, check(done=True, finished=1))
        return reply(200, done(generation(img=encoded)))

    server = FakeServer(handler)
    res = await make(server, r2=False).generate(ProviderRequest("x"), server.context())
    assert res.images[0].data == WEBP
    assert res.images[0].url is None


async def test_any_model_sends_no_models_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert "models" not in json_body(request)
            return reply(202, {"id": JOB})
        if request.url.path == CHECK:
            return reply(200, check(done=True, finished=1))
        return reply(200, done(generation()))

    server = FakeServer(handler)
    assert (await make(server).generate(ProviderRequest("x"), server.context())).images


async def test_faulted_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(202, {"id": JOB})
        return reply(200, check(faulted=True))

    server = FakeServer(handler)
    with pytest.raises(Transient, match="faulted"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_all_censored_is_refused_and_some_censored_are_dropped() -> None:
    censored = generation(censored=True, gen_metadata=[{"type": "censorship", "value": "nsfw"}])

    def handler_for(final: dict[str, Any]) -> Any:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                return reply(202, {"id": JOB})
            if request.url.path == CHECK:
                return reply(200, check(done=True))
            return reply(200, final)

        return handler

    server = FakeServer(handler_for(done(censored)))
    with pytest.raises(Refused):
        await make(server).generate(ProviderRequest("x"), server.context())

    server = FakeServer(handler_for(done(censored, generation())))
    res = await make(server).generate(ProviderRequest("x", n=2), server.context())
    assert len(res.images) == 1
    assert res.metadata["censored"] == 1


async def test_corrupt_prompt_is_refused() -> None:
    message = "This prompt appears to violate our terms of service and will be reported."
    server = FakeServer(lambda r: reply(400, {"message": message, "rc": "CorruptPrompt"}))
    with pytest.raises(Refused, match="terms of service"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_kudos_upfront_is_invalid_request_not_auth() -> None:
    body_ = {"message": "This request requires 9.44 kudos upfront", "rc": "KudosUpfront"}
    server = FakeServer(lambda r: reply(403, body_))
    with pytest.raises(InvalidRequest, match="KudosUpfront"):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_invalid_key_is_auth_error_without_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        identified(request, key=SECRET)
        return reply(
            401, {"message": f"No user matching sent API Key {SECRET}", "rc": "InvalidAPIKey"}
        )

    server = FakeServer(handler)
    provider = make(server, api_key=SecretStr(SECRET))
    with pytest.raises(ProviderAuthError) as info:
        await provider.generate(ProviderRequest("x"), server.context())
    assert_secret_absent(info.value)


async def test_429_with_retry_after() -> None:
    server = FakeServer(
        lambda r: reply(
            429,
            {"message": "Too many prompts", "rc": "TooManyPrompts"},
            headers={"Retry-After": "9"},
        )
    )
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after == 9


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: reply(503, {"message": "Maintenance", "rc": "MaintenanceMode"}))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_malformed_body_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(202, content=b'{"kudos": 1}'))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_impossible_request_is_deleted_and_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(202, {"id": JOB})
        if request.method == "DELETE":
            return reply(200, done())
        return reply(200, check(is_possible=False))

    server = FakeServer(handler)
    with pytest.raises(Transient, match="no worker"):
        await make(server).generate(ProviderRequest("x"), server.context())
    assert len(server.seen("DELETE", STATUS)) == 1


async def test_cancel_deletes_the_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        identified(request)
        return reply(200, done())

    server = FakeServer(handler)
    await make(server).cancel(JOB)
    assert [(r.method, r.url.path) for r in server.requests] == [("DELETE", STATUS)]


async def test_stuck_in_queue_past_timeout_is_deleted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(202, {"id": JOB})
        if request.method == "DELETE":
            return reply(200, done())
        return reply(200, check(queue_position=500, wait_time=900))

    server = FakeServer(handler)
    ctx = server.context()
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest("x"), ctx)
    assert ctx.saved_jobs == [JOB]
    assert len(server.seen("DELETE", STATUS)) == 1


async def test_hanging_submit_times_out() -> None:
    server = FakeServer(hang())
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.1).generate(ProviderRequest("x"), server.context())
    assert server.seen("DELETE") == []


async def test_resume_polls_the_saved_request_without_submitting() -> None:
    checks = iter([check(processing=1, waiting=0), check(done=True, finished=1)])

    def handler(request: httpx.Request) -> httpx.Response:
        identified(request)
        if request.url.path == CHECK:
            return reply(200, next(checks))
        assert request.url.path == STATUS
        return reply(200, done(generation()))

    server = FakeServer(handler)
    ctx = server.context(provider_job_id=JOB)
    res = await make(server).generate(ProviderRequest("x"), ctx)
    assert res.images[0].url == R2
    assert server.seen("POST") == []
    assert ctx.saved_jobs == []


def test_works_without_a_key() -> None:
    provider = make(FakeServer(lambda r: reply(500)))
    assert provider.configured
    assert provider.api_key() == ANONYMOUS_KEY
    assert provider.model_info("Some Community Model").price_usd == Decimal("0")
