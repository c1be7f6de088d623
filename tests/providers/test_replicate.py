"""Replicate adapter against a fake predictions API (PROVIDERS.md §5)."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.replicate import FLUX_RATIOS, ReplicateProvider, ReplicateSettings
from tests.fakes import FakeJobContext
from tests.providers.kit import PNG, SECRET, FakeServer, assert_secret_absent, b64, json_body, reply

API = "https://api.replicate.com"
PREFER = re.compile(r"^wait(=([1-9]|[1-9][0-9]|60))?$")
PRED_ID = "gm3qorzdhgbfurvjtvhg6dckhu"
VERSION = "a" * 64


def prediction(status: str = "starting", **fields: Any) -> dict[str, Any]:
    return {
        "id": PRED_ID,
        "model": "black-forest-labs/flux-schnell",
        "version": "hidden",
        "input": {},
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": None,
        "status": status,
        "created_at": "2025-01-01T00:00:00.000Z",
        "urls": {
            "get": f"{API}/v1/predictions/{PRED_ID}",
            "cancel": f"{API}/v1/predictions/{PRED_ID}/cancel",
        },
        **fields,
    }


def make(server: FakeServer, **settings: Any) -> ReplicateProvider:
    options: dict[str, Any] = {"api_key": SecretStr(SECRET), "poll_interval_s": 0.01}
    options.update(settings)
    return ReplicateProvider("replicate", ReplicateSettings(**options), server.client())


def check_create(request: httpx.Request) -> dict[str, Any]:
    """What every create call must look like."""
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    if "prefer" in request.headers:
        assert PREFER.match(request.headers["prefer"]), request.headers["prefer"]
    data = json_body(request)
    assert isinstance(data["input"], dict)
    assert isinstance(data["input"]["prompt"], str)
    return data


def check_poll(request: httpx.Request) -> None:
    assert request.method == "GET"
    assert request.url.path == f"/v1/predictions/{PRED_ID}"
    assert request.headers["authorization"] == f"Bearer {SECRET}"


async def test_sync_mode_answer_returns_output_urls_without_polling() -> None:
    urls = ["https://replicate.delivery/xezq/a/out-0.webp", "https://replicate.delivery/b.webp"]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
        data = check_create(request)
        assert request.headers["prefer"] == "wait=59"
        inp = data["input"]
        assert inp["aspect_ratio"] in FLUX_RATIOS and inp["aspect_ratio"] == "16:9"
        assert inp["num_outputs"] == 2 and isinstance(inp["num_outputs"], int)
        assert inp["output_format"] == "jpg"
        assert inp["seed"] == 42
        return reply(201, prediction("succeeded", output=urls))

    server = FakeServer(handler)
    provider = make(server)
    ctx = server.context()
    req = ProviderRequest(
        "a fox", model="black-forest-labs/flux-schnell", n=2, width=1920, height=1080,
        format="jpeg", seed=42,
    )  # fmt: skip
    result = await provider.generate(req, ctx)
    assert [img.url for img in result.images] == urls
    assert result.cost_usd == Decimal("0.006")
    assert result.provider_job_id == PRED_ID
    assert ctx.saved_jobs == [PRED_ID]
    assert server.seen("GET") == []


async def test_polls_starting_processing_succeeded_with_progress_and_saves_first() -> None:
    states = iter(
        [
            prediction("starting"),
            prediction("processing", logs="Using seed: 1\n 50%|█████     | 2/4 [00:01<00:01]"),
            prediction("processing", logs=" 50%|█████ | 2/4\n100%|██████████| 4/4"),
            prediction("succeeded", output="https://replicate.delivery/x/out.png"),
        ]
    )
    ctx: FakeJobContext | None = None

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.url.path == "/v1/models/google/nano-banana/predictions"
            inp = check_create(request)["input"]
            assert inp == {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "png"}
            return reply(201, prediction("starting"))
        check_poll(request)
        # The id is saved before the first poll, so a restart would not pay twice.
        assert ctx is not None and ctx.saved_jobs == [PRED_ID]
        return reply(200, next(states))

    server = FakeServer(handler)
    ctx = server.context()
    result = await make(server).generate(ProviderRequest("a cat", model="google/nano-banana"), ctx)
    assert [img.url for img in result.images] == ["https://replicate.delivery/x/out.png"]
    assert result.cost_usd == Decimal("0.039")
    percents = [p for p, _ in ctx.progress_reports]
    assert percents == sorted(percents) and percents[0] == 5 and percents[-1] == 95
    assert (52, "processing") in ctx.progress_reports


async def test_pinned_version_goes_through_post_predictions() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/predictions"
        data = check_create(request)
        assert data["version"] == f"acme/thing:{VERSION}"
        assert data["input"] == {"prompt": "x", "seed": 7}
        return reply(201, prediction("succeeded", output=["https://replicate.delivery/o.png"]))

    server = FakeServer(handler)
    req = ProviderRequest("x", model=f"acme/thing:{VERSION}", seed=7)
    result = await make(server).generate(req, server.context())
    assert result.images[0].url == "https://replicate.delivery/o.png"
    assert result.cost_usd == Decimal("0.05")


async def test_any_owner_name_model_uses_generic_input_and_options_input() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/acme/painter/predictions"
        assert check_create(request)["input"] == {"prompt": "x", "steps": 9}
        return reply(201, prediction("succeeded", output="https://replicate.delivery/o.png"))

    server = FakeServer(handler)
    req = ProviderRequest("x", model="acme/painter", options={"input": {"steps": 9}})
    assert (await make(server).generate(req, server.context())).images


async def test_data_uri_output_is_returned_inline() -> None:
    uri = "data:image/png;base64," + b64(PNG)
    server = FakeServer(lambda r: reply(201, prediction("succeeded", output=[uri])))
    result = await make(server).generate(ProviderRequest("x"), server.context())
    assert result.images[0].data == PNG
    assert result.images[0].content_type == "image/png"


async def test_unknown_model_is_rejected_when_any_model_is_off() -> None:
    server = FakeServer(lambda r: reply(500))
    provider = make(server, allow_any_model=False)
    with pytest.raises(InvalidRequest):
        await provider.generate(ProviderRequest("x", model="acme/painter"), server.context())
    assert server.requests == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("NSFW content detected. Try running it again, or try a different prompt.", Refused),
        ("CUDA out of memory", Transient),
        ("Invalid input: num_outputs must be <= 4", InvalidRequest),
    ],
)
async def test_failed_prediction_maps_its_error(error: str, expected: type[ProviderError]) -> None:
    states = iter([prediction("processing"), prediction("failed", error=error)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return reply(201, prediction("starting"))
        return reply(200, next(states))

    server = FakeServer(handler)
    with pytest.raises(expected) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert error[:20] in str(info.value)
    assert_secret_absent(info.value)


async def test_externally_canceled_prediction_is_invalid_request_provider_canceled() -> None:
    server = FakeServer(lambda r: reply(201, prediction("canceled")))
    with pytest.raises(InvalidRequest) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.code == "provider_canceled"


async def test_aborted_prediction_is_transient() -> None:
    server = FakeServer(lambda r: reply(201, prediction("aborted")))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_cancel_posts_to_the_cancel_route() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        return reply(200, prediction("canceled"))

    server = FakeServer(handler)
    await make(server).cancel(PRED_ID)
    assert [r.url.path for r in server.requests] == [f"/v1/predictions/{PRED_ID}/cancel"]


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_cancel_is_sent_and_never_raises(status: int) -> None:
    """Cancel is best effort: whatever the provider answers, the cancel was asked for and
    the caller (a deadline, a race loser) carries on."""
    server = FakeServer(lambda r: reply(status, {"detail": "nope"}))
    assert await make(server).cancel(PRED_ID) is None
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("POST", f"/v1/predictions/{PRED_ID}/cancel")
    ]


async def test_cancel_survives_an_unreachable_provider() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = FakeServer(refuse)
    assert await make(server).cancel(PRED_ID) is None
    assert len(server.requests) == 1


async def test_429_with_retry_after_header() -> None:
    server = FakeServer(
        lambda r: reply(429, {"detail": "Request was throttled."}, headers={"Retry-After": "7"})
    )
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after == 7
    assert info.value.status_code == 429


async def test_429_with_retry_after_in_the_body() -> None:
    detail = "Request was throttled. Your rate limit for creating predictions is reduced"
    server = FakeServer(lambda r: reply(429, {"detail": detail, "status": 429, "retry_after": 5}))
    with pytest.raises(ProviderRateLimited) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.retry_after == 5
    assert "throttled" in info.value.message


async def test_401_is_auth_error_without_the_key() -> None:
    server = FakeServer(lambda r: reply(401, {"detail": f"Invalid token {SECRET}"}))
    with pytest.raises(ProviderAuthError) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert_secret_absent(info.value)
    assert "***" in info.value.message


async def test_missing_key_is_auth_error() -> None:
    server = FakeServer(lambda r: reply(500))
    provider = ReplicateProvider("replicate", ReplicateSettings(), server.client())
    assert not provider.configured
    with pytest.raises(ProviderAuthError):
        await provider.generate(ProviderRequest("x"), server.context())


async def test_5xx_is_transient() -> None:
    server = FakeServer(lambda r: httpx.Response(503, text="upstream unavailable"))
    with pytest.raises(Transient) as info:
        await make(server).generate(ProviderRequest("x"), server.context())
    assert info.value.status_code == 503


@pytest.mark.parametrize("content", [b"<html>oops</html>", b'{"id": "x"}', b'{"status": "weird"}'])
async def test_malformed_body_is_transient(content: bytes) -> None:
    server = FakeServer(lambda r: httpx.Response(201, content=content))
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_transport_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = FakeServer(handler)
    with pytest.raises(Transient):
        await make(server).generate(ProviderRequest("x"), server.context())


async def test_prediction_stuck_past_timeout_is_canceled_and_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cancel"):
            return reply(200, prediction("canceled"))
        if request.method == "POST":
            return reply(201, prediction("starting"))
        return reply(200, prediction("processing"))

    server = FakeServer(handler)
    ctx = server.context()
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.2).generate(ProviderRequest("x"), ctx)
    assert ctx.saved_jobs == [PRED_ID]
    assert len(server.seen("POST", f"/v1/predictions/{PRED_ID}/cancel")) == 1


async def test_hanging_create_times_out() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return reply(201, prediction("starting"))

    server = FakeServer(handler)
    with pytest.raises(ProviderTimeout):
        await make(server, timeout_s=0.1).generate(ProviderRequest("x"), server.context())
    assert "prefer" not in server.requests[0].headers  # timeout under 2 s: no sync wait


async def test_resume_polls_the_saved_prediction_without_creating_one() -> None:
    states = iter([prediction("processing"), prediction("succeeded", output="https://r.d/o.png")])

    def handler(request: httpx.Request) -> httpx.Response:
        check_poll(request)
        return reply(200, next(states))

    server = FakeServer(handler)
    ctx = server.context(provider_job_id=PRED_ID)
    result = await make(server).generate(ProviderRequest("x"), ctx)
    assert result.images[0].url == "https://r.d/o.png"
    assert server.seen("POST") == []
    assert ctx.saved_jobs == []


def test_catalog_has_the_builtin_models_with_prices() -> None:
    provider = make(FakeServer(lambda r: reply(500)))
    assert {
        "google/nano-banana",
        "black-forest-labs/flux-schnell",
        "black-forest-labs/flux-1.1-pro",
        "ideogram-ai/ideogram-v2",
    } <= set(provider.models)
    assert provider.models["black-forest-labs/flux-schnell"].capabilities.max_n == 4
    assert provider.price(ProviderRequest("x", model="google/nano-banana")) == Decimal("0.039")
    assert provider.model_info("someone/something").price_usd == Decimal("0.05")
