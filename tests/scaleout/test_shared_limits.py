"""Request-rate limits live in Redis with scale-out: every process counts against one window."""

from __future__ import annotations

import secrets

import pytest

from pixelgate.config import load_settings
from pixelgate.errors import RateLimited
from pixelgate.resilience.inbound import RequestLimiter


async def test_two_processes_share_one_window(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url, redis_prefix=f"t{secrets.token_hex(4)}")
    api_1 = RequestLimiter.for_settings(settings)
    api_2 = RequestLimiter.for_settings(settings)
    account = f"acct_{secrets.token_hex(4)}"
    for limiter in (api_1, api_2, api_1):
        async with limiter.admitting(account, 3):
            pass
    with pytest.raises(RateLimited) as info:
        async with api_2.admitting(account, 3):
            pass
    assert info.value.limit == 3 and info.value.retry_after > 0
