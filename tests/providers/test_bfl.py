"""Black Forest Labs adapter against the two-host fake BFL API (PROVIDERS-2.md §4, §8)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pixelgate.config import load_settings
from pixelgate.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.bfl import BflProvider, BflSettings
from pixelgate.providers.registry import build_providers
from tests.fakes import FakeJobContext, png_bytes
from tests.providers.fakes.bfl import KEY, POLL_HOST, FakeBfl, bfl_servers

IMAGE = png_bytes(40, 30)


@pytest.fixture
def fake() -> Iterator[FakeBfl]:
    with bfl_servers(IMAGE) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make(fake: FakeBfl, http: httpx.AsyncClient, **options: Any) -> BflProvider:
    settings: dict[str, Any] = {
        "api_key": SecretStr(KEY),
        "base_url": fake.base_url(),
        "allowed_hosts": [POLL_HOST],
        "poll_interval_s": 0.01,
        "timeout_s": 5.0,
    }
    settings.update(options)
    return BflProvider("bfl", BflSettings(**settings), http)


def sent(fake: FakeBfl) -> dict[str, Any]:
    [submit] = fake.submits
    body = json.loads(submit.body)
    assert isinstance(body, dict)
    return body


async def test_generate_polls_the_other_host_and_downloads_the_sample_at_once(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    ctx = FakeJobContext(http=http)
    request = ProviderRequest("a red kite", model="flux-pro-1.1", width=1000, height=770, seed=7)
    result = await make(fake, http).generate(request, ctx)

    body = sent(fake)
    assert fake.submits[0].path == "/v1/flux-pro-1.1"
    assert fake.submits[0].headers["x-key"] == KEY
    assert (body["prompt"], body["width"], body["height"]) == ("a red kite", 992, 768)
    assert (body["seed"], body["output_format"], body["safety_tolerance"]) == (7, "png", 2)
    [saved] = ctx.saved_jobs
    assert saved.startswith(f"http://{POLL_HOST}:") and "/v1/get_result?id=" in saved
    # every poll went to the polling URL's host, with the key; the sample was fetched bare
    assert len(fake.polls) == 2
    assert fake.poller is not None and all(r in fake.poller.received for r in fake.polls)
    assert all(r.headers["x-key"] == KEY for r in fake.polls)
    assert len(fake.downloads) == 1
    [image] = result.images
    assert image.data == IMAGE and image.url is None and image.seed == 7
    assert result.cost_usd == Decimal("0.04")  # the submit's 4 credits
    assert result.provider_job_id == saved
    assert (52, "generating") in ctx.progress_reports


async def test_a_polling_host_outside_the_allowed_ones_never_gets_the_key(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    provider = make(fake, http, allowed_hosts=["bfl.ai"])  # the default: BFL's own domains
    ctx = FakeJobContext(http=http)
    with pytest.raises(Transient, match="unexpected host"):
        await provider.generate(ProviderRequest("x", model="flux-pro-1.1"), ctx)
    assert fake.poller is not None and fake.poller.received == []
    assert fake.polls and all(r in fake.api.received for r in fake.polls)  # type: ignore[union-attr]
    [task_id] = fake.tasks
    assert ctx.saved_jobs == [task_id]


async def test_kontext_edits_the_input_image(fake: FakeBfl, http: httpx.AsyncClient) -> None:
    source = png_bytes(16, 16, (0, 0, 255))
    request = ProviderRequest(
        "make it red", model="flux-kontext-pro", width=1600, height=900, edit_image=source
    )
    result = await make(fake, http).generate(request, FakeJobContext(http=http))
    body = sent(fake)
    assert base64.b64decode(body["input_image"]) == source
    assert body["aspect_ratio"] == "16:9" and "width" not in body
    assert result.images[0].data == IMAGE


async def test_ultra_takes_an_aspect_ratio_not_a_size(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    request = ProviderRequest("x", model="flux-pro-1.1-ultra", aspect_ratio="21:9")
    result = await make(fake, http).generate(request, FakeJobContext(http=http))
    assert sent(fake)["aspect_ratio"] == "21:9"
    assert result.cost_usd == Decimal("0.06")


async def test_429_on_submit_is_rate_limited_with_retry_after(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    fake.busy = 7
    ctx = FakeJobContext(http=http)
    with pytest.raises(ProviderRateLimited) as info:
        await make(fake, http).generate(ProviderRequest("x"), ctx)
    assert info.value.retry_after == 7 and info.value.status_code == 429
    assert ctx.saved_jobs == [] and fake.tasks == {}


async def test_429_while_polling_waits_and_polls_again(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    fake.poll_throttles = 2
    result = await make(fake, http).generate(ProviderRequest("x"), FakeJobContext(http=http))
    assert result.images[0].data == IMAGE
    assert len(fake.submits) == 1 and len(fake.polls) == 4


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
async def test_moderated_tasks_are_refusals(
    fake: FakeBfl, http: httpx.AsyncClient, status: str
) -> None:
    fake.script = ["Pending", status]
    with pytest.raises(Refused) as info:
        await make(fake, http).generate(ProviderRequest("x"), FakeJobContext(http=http))
    assert status in info.value.message and "Derivative Works Filter" in info.value.message
    assert fake.downloads == []


async def test_a_failed_task_is_transient(fake: FakeBfl, http: httpx.AsyncClient) -> None:
    fake.script = ["Error"]
    with pytest.raises(Transient, match="task error"):
        await make(fake, http).generate(ProviderRequest("x"), FakeJobContext(http=http))


async def test_a_wrong_key_is_an_auth_error_that_does_not_quote_the_key(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    provider = make(fake, http, api_key=SecretStr("bfl-wrong-key"))
    with pytest.raises(ProviderAuthError) as info:
        await provider.generate(ProviderRequest("x"), FakeJobContext(http=http))
    assert "bfl-wrong-key" not in str(info.value)
    assert fake.tasks == {}


async def test_bad_parameters_are_invalid_request_naming_the_field(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    request = ProviderRequest("x", options={"input": {"width": 1000}})
    with pytest.raises(InvalidRequest, match=r"body\.width"):
        await make(fake, http).generate(request, FakeJobContext(http=http))


async def test_a_task_still_pending_at_the_deadline_times_out(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    fake.script = ["Pending"]
    ctx = FakeJobContext(http=http)
    with pytest.raises(ProviderTimeout):
        await make(fake, http, timeout_s=0.3).generate(ProviderRequest("x"), ctx)
    assert len(ctx.saved_jobs) == 1 and len(fake.polls) >= 2


async def test_a_restarted_worker_resumes_polling_without_a_second_submit(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    fake.script = ["Pending"]
    first = FakeJobContext(http=http)
    run = asyncio.create_task(make(fake, http).generate(ProviderRequest("x"), first))
    for _ in range(200):
        if first.saved_jobs and fake.polls:
            break
        await asyncio.sleep(0.01)
    run.cancel()  # the worker dies mid-poll
    with pytest.raises(asyncio.CancelledError):
        await run
    [task] = fake.tasks.values()
    task.script = ["Ready"]

    resumed = FakeJobContext(http=http, provider_job_id=first.saved_jobs[0])
    result = await make(fake, http).generate(ProviderRequest("x"), resumed)
    assert len(fake.submits) == 1  # polled on, not submitted (and paid for) twice
    assert resumed.saved_jobs == []
    assert result.images[0].data == IMAGE
    assert result.cost_usd == Decimal("0.04")  # the table price: the submit's cost is gone


async def test_resuming_an_unknown_task_is_transient(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    ctx = FakeJobContext(http=http, provider_job_id="no-such-task")
    with pytest.raises(Transient, match="task not found"):
        await make(fake, http).generate(ProviderRequest("x"), ctx)
    assert fake.submits == []


async def test_the_sample_url_is_dead_ten_minutes_later_so_it_is_fetched_at_once(
    fake: FakeBfl, http: httpx.AsyncClient
) -> None:
    await make(fake, http).generate(ProviderRequest("x"), FakeJobContext(http=http))
    assert fake.poller is not None
    [download] = fake.downloads
    url = fake.poller.url(download.path)
    assert (await http.get(url)).status_code == 200
    fake.advance(601)
    assert (await http.get(url)).status_code == 403


async def test_health_reads_the_credit_balance(fake: FakeBfl, http: httpx.AsyncClient) -> None:
    health = await make(fake, http).health()
    assert health.healthy and health.detail == "1234.5 credits"
    bad = await make(fake, http, api_key=SecretStr("nope")).health()
    assert not bad.healthy and bad.status == "auth_failed"


def test_catalog_lists_models_capabilities_and_prices(http: httpx.AsyncClient) -> None:
    provider = BflProvider("bfl", BflSettings(api_key=SecretStr(KEY)), http)
    models = provider.models
    assert models["flux-pro-1.1"].price_usd == Decimal("0.04")
    assert models["flux-kontext-max"].capabilities.edit
    assert models["flux-pro-1.0-fill"].capabilities.mask
    assert models["flux-pro-1.1-ultra"].capabilities.aspect_ratios
    assert provider.price(ProviderRequest("x", model="flux-2-pro", width=2048, height=1024)) == (
        Decimal("0.09")  # FLUX.2 is priced per started megapixel
    )


@pytest.mark.parametrize("variable", ["BFL_API_KEY", "PIXELGATE_BFL_API_KEY"])
def test_the_key_comes_from_either_variable(
    monkeypatch: pytest.MonkeyPatch, http: httpx.AsyncClient, variable: str
) -> None:
    monkeypatch.setenv(variable, KEY)
    providers = build_providers(load_settings(), http)
    bfl = providers.get("bfl")
    assert bfl.kind == "bfl" and bfl.configured and bfl.api_key() == KEY
