"""``pixelgate.client`` against a live ``pixelgate serve`` process (sync and async)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from pixelgate.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    GenerationFailed,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    Status,
    WaitTimeout,
)
from tests.acceptance.conftest import ADMIN_KEY, Launcher, Server

CONFIG = """
[providers.fast]
kind = "placeholder"

[providers.slow]
kind = "placeholder"
latency_ms = 4000

[providers.flaky]
kind = "placeholder"
fail_rate = 1.0

[routing]
default = ["fast"]

# one generation per 2 s: the second answers 429 with a short Retry-After
[tiers.BURST]
daily_limit = 1
window_s = 2
"""


@pytest.fixture(scope="module")
def server(module_launcher: Launcher) -> Server:
    return module_launcher.start(config=CONFIG)


@pytest.fixture
def admin(server: Server) -> Iterator[Client]:
    with Client(server.base_url, api_key=ADMIN_KEY) as client:
        yield client


def _user(admin: Client, server: Server, name: str, **fields: object) -> Client:
    admin.admin.create_account(name, tier=str(fields.pop("tier", "PRO")), **fields)
    key = admin.admin.create_key(name)
    assert key.key and key.account == name
    return Client(server.base_url, api_key=key.key)


def test_importing_the_client_loads_none_of_the_server() -> None:
    code = (
        "import sys, pixelgate.client\n"
        "heavy = [m for m in ('sqlalchemy', 'fastapi', 'starlette', 'PIL', 'structlog',"
        " 'pixelgate.runtime', 'pixelgate.api', 'pixelgate.db') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_generate_waits_and_downloads_the_checked_image(admin: Client, tmp_path: Path) -> None:
    generation = admin.generate("a lighthouse at dusk", width=96, height=64, seed=7)
    assert generation.status == Status.SUCCEEDED and generation.ok and generation.terminal
    assert generation.provider == "fast" and generation.cost.credits >= 0
    [image] = generation.images
    assert (image.width, image.height, image.format) == (96, 64, "png")
    target = tmp_path / "out.png"
    data = admin.download(image, target)
    assert hashlib.sha256(data).hexdigest() == image.sha256 == generation.images[0].sha256
    assert target.read_bytes() == data
    assert PILImage.open(io.BytesIO(data)).size == (96, 64)
    # every field of the server's generation body is a declared field of the model
    assert generation.model_extra == {}
    assert image.model_extra == {}


def test_submit_handle_status_events_wait_and_resume(admin: Client) -> None:
    handle = admin.submit("a fox", provider="slow", width=32, height=32)
    assert handle.generation.status in (Status.PENDING, Status.PROCESSING)
    assert handle.status().id == handle.id
    events = list(handle.events())
    types = [e.type for e in events]
    assert types[0] == "queued" and types[-1] == "succeeded" and "progress" in types
    assert all(e.generation_id == handle.id for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and None not in ids
    finished = handle.wait(timeout=30)
    assert finished.ok and len(finished.images) == 1
    # resume after an event id: only what came later
    middle = events[len(events) // 2]
    resumed = list(admin.events(handle.id, last_event_id=middle.id))
    assert [e.id for e in resumed] == [e.id for e in events if e.id and e.id > (middle.id or 0)]


def test_cancel_and_wait_timeout(admin: Client) -> None:
    handle = admin.submit("slow one", provider="slow", width=32, height=32)
    with pytest.raises(WaitTimeout) as info:
        handle.wait(timeout=0.3)
    assert info.value.generation.id == handle.id and not info.value.generation.terminal
    handle.cancel()
    assert handle.wait(timeout=30).status == Status.CANCELED


def test_a_failed_generation_raises_with_its_code(admin: Client) -> None:
    with pytest.raises(GenerationFailed) as info:
        admin.generate("doomed", provider="flaky", width=32, height=32, timeout=60)
    assert info.value.generation.status == Status.FAILED
    assert info.value.code == info.value.generation.error.code  # type: ignore[union-attr]
    assert info.value.code and info.value.request_id


def test_errors_carry_code_field_and_request_id(admin: Client, server: Server) -> None:
    # caught before sending, with the server's own model
    with pytest.raises(BadRequestError) as info:
        admin.submit("x", width=5, height=64)
    assert info.value.field == "width" and info.value.code == "invalid_request"
    assert info.value.status is None
    # refused by the server
    with pytest.raises(BadRequestError) as info:
        admin.submit("x", provider="no-such-provider")
    assert info.value.status == 422 and info.value.request_id
    assert info.value.code == "unknown_provider" and info.value.field == "provider"
    assert "no-such-provider" in info.value.message
    with pytest.raises(NotFoundError) as missing:
        admin.get_generation("gen_doesnotexist")
    assert missing.value.code == "not_found" and missing.value.request_id
    with Client(server.base_url, api_key="pg_wrong") as stranger, pytest.raises(
        AuthenticationError
    ) as auth:
        stranger.account()
    assert auth.value.status == 401 and auth.value.code == "unauthorized"


def test_no_credits_is_payment_required_and_charges_nothing(admin: Client, server: Server) -> None:
    with _user(admin, server, "broke", credits=0) as broke:
        with pytest.raises(PaymentRequiredError) as info:
            broke.generate("anything", width=32, height=32)
        assert info.value.code == "insufficient_credits" and info.value.request_id
        assert broke.account().credits == 0
        assert broke.list_generations().data == []


def test_rate_limit_is_retried_after_retry_after(admin: Client, server: Server) -> None:
    with _user(admin, server, "bursty", tier="BURST") as bursty:
        bursty.generate("first", width=32, height=32)
        started = time.monotonic()
        second = bursty.generate("second", width=32, height=32)  # 429, waits, then admitted
        assert second.ok and time.monotonic() - started >= 0.5
        bursty.generate("third", width=32, height=32)
    impatient = _user(admin, server, "impatient", tier="BURST")
    impatient.retry = type(impatient.retry)(max_retries=0)
    with impatient:
        impatient.generate("first", width=32, height=32)
        with pytest.raises(RateLimitError) as info:
            impatient.generate("second", width=32, height=32)
        assert info.value.code == "rate_limited" and info.value.retry_after
        assert len(impatient.list_generations().data) == 1


def test_batches(admin: Client) -> None:
    batch = admin.create_batch(
        [{"prompt": f"tile {i}", "width": 32, "height": 32} for i in range(3)], concurrency=2
    )
    assert batch.size == 3 and len(batch.generation_ids) == 3
    done = admin.wait_batch(batch, timeout=60)
    assert done.status == "completed" and done.counts["SUCCEEDED"] == 3
    page = admin.list_generations(batch_id=batch.id)
    assert {g.id for g in page.data} == set(batch.generation_ids)
    assert any(b.id == batch.id for b in admin.list_batches())
    paged = [g.id for g in admin.iter_generations(batch_id=batch.id, page_size=2)]
    assert sorted(paged) == sorted(batch.generation_ids)  # two pages, nothing twice


def test_admin_accounts_keys_and_tenancy(admin: Client, server: Server) -> None:
    with _user(admin, server, "alice", credits=50) as alice:
        mine = alice.generate("alice's cat", width=32, height=32)
        assert alice.account().credits == 50 - mine.cost.credits
        assert admin.admin.grant_credits("alice", 10, reason="test") == alice.account().credits
        with _user(admin, server, "bob", credits=50) as bob:
            assert bob.list_generations().data == []
            with pytest.raises(NotFoundError):
                bob.get_generation(mine.id)
            with pytest.raises(PermissionDeniedError) as info:
                bob.admin.list_accounts()
            assert info.value.code == "forbidden"
    names = {a.name for a in admin.admin.list_accounts()}
    assert {"alice", "bob"} <= names
    assert admin.admin.get_account("alice").tier == "PRO"
    key = admin.admin.create_key("alice", name="short-lived")
    admin.admin.revoke_key(key.id)
    with Client(server.base_url, api_key=key.key) as revoked, pytest.raises(AuthenticationError):
        revoked.account()


def test_catalog_and_estimate(admin: Client) -> None:
    providers = {p.name: p for p in admin.providers()}
    assert {"fast", "slow", "flaky"} <= set(providers)
    fast = providers["fast"]
    assert fast.configured and fast.models and fast.models[0].capabilities
    estimate = admin.estimate("a boat", provider="fast", n=2, width=32, height=32)
    assert estimate.provider == "fast" and estimate.affordable and estimate.credits >= 0


def test_async_client(server: Server, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(server.base_url, api_key=ADMIN_KEY) as pg:
            generation = await pg.generate("an async owl", width=48, height=48, format="webp")
            data = await pg.download(generation.images[0], tmp_path / "owl.webp")
            assert PILImage.open(io.BytesIO(data)).format == "WEBP"
            handle = await pg.submit("an async fox", provider="slow", width=32, height=32)
            types = [event.type async for event in handle.events()]
            assert types[0] == "queued" and types[-1] == "succeeded"
            assert (await handle.wait(timeout=30)).ok
            assert (await handle.status()).ok
            other = await pg.submit("cancel me", provider="slow", width=32, height=32)
            await other.cancel()
            assert (await other.wait(timeout=30)).status == Status.CANCELED
            with pytest.raises(GenerationFailed):
                await pg.generate("doomed", provider="flaky", width=32, height=32)
            assert (await pg.account()).name
            ids = [g.id async for g in pg.iter_generations(status="CANCELED", page_size=1)]
            assert other.id in ids and len(ids) == len(set(ids))
            assert await pg.providers()

    asyncio.run(main())
