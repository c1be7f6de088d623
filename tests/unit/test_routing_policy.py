"""Route planning (selection policy, skips, the trace), options, retry backoff and racing."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pixelgate.config import RoutingSettings
from pixelgate.core.models import GenerationRequest
from pixelgate.core.routing import (
    AccountRouting,
    Race,
    RaceFailed,
    RetryPolicy,
    plan_route,
    resolve_options,
)
from pixelgate.errors import Refused, Transient
from pixelgate.providers.openai import OpenAIProvider
from pixelgate.providers.placeholder import PlaceholderSettings
from pixelgate.providers.registry import ProviderSet
from tests.fakes import ScriptedProvider, ScriptedSettings


def scripted(name: str, price: str = "0", **extra: Any) -> ScriptedProvider:
    settings = ScriptedSettings(price_usd=price, **extra)
    return ScriptedProvider(name, settings, httpx.AsyncClient())


def provider_set(chain: list[str], **providers: Any) -> ProviderSet:
    return ProviderSet(dict(providers), chain)


def names(candidates: list[Any]) -> list[str]:
    return [c.provider.name for c in candidates]


def req(**fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"prompt": "a cat", **fields})


# Order ------------------------------------------------------------------------------


def test_explicit_providers_are_the_only_candidates() -> None:
    ps = provider_set(["a", "b"], a=scripted("a"), b=scripted("b"), c=scripted("c"))
    candidates, trace = plan_route(req(providers=["c", "a"]), ps, preferred=["b"])
    assert names(candidates) == ["c", "a"]
    assert [e["step"] for e in trace] == ["requested", "requested"]


def test_preferred_then_the_chain_without_duplicates() -> None:
    ps = provider_set(["a", "b"], a=scripted("a"), b=scripted("b"), c=scripted("c"))
    candidates, trace = plan_route(req(), ps, preferred=["c", "b"])
    assert names(candidates) == ["c", "b", "a"]
    assert [e["step"] for e in trace] == ["preferred", "preferred", "fallback_chain"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("cost", ["cheap", "mid", "dear"]), ("quality", ["dear", "mid", "cheap"])],
)
def test_policy_ranks_the_automatic_pool(policy: str, expected: list[str]) -> None:
    ps = provider_set(
        ["mid", "dear", "cheap"],
        mid=scripted("mid", "0.04"),
        dear=scripted("dear", "0.08"),
        cheap=scripted("cheap", "0.01"),
    )
    scores = {"dear": 90.0, "mid": 70.0, "cheap": 40.0}
    candidates, trace = plan_route(req(), ps, policy=policy, quality=lambda p: scores[p.name])
    assert names(candidates) == expected
    assert {e["step"] for e in trace} == {f"policy:{policy}"}
    assert {e["provider"]: e["estimate_usd"] for e in trace} == {
        "mid": "0.04",
        "dear": "0.08",
        "cheap": "0.01",
    }


def test_latency_policy_uses_observed_latency_and_unknown_goes_after_known() -> None:
    ps = provider_set(
        ["slow", "new", "quick"],
        slow=scripted("slow"),
        new=scripted("new"),
        quick=scripted("quick"),
    )
    observed = {"slow": 9000.0, "quick": 300.0}
    candidates, _ = plan_route(req(), ps, policy="latency", latency_ms=observed.get)
    assert names(candidates) == ["quick", "slow", "new"]


def test_priority_comes_before_the_policy_and_orders_ties() -> None:
    ps = provider_set(["a", "b"], a=scripted("a", "0.01"), b=scripted("b", "0.05"))
    prio = {"a": 10, "b": 1}
    candidates, _ = plan_route(req(), ps, policy="cost", priority=prio.__getitem__)
    assert names(candidates) == ["b", "a"]


def test_the_automatic_pool_leaves_out_placeholders_unless_chained() -> None:
    from pixelgate.providers.placeholder import PlaceholderProvider

    extra = PlaceholderProvider("spare", PlaceholderSettings(), httpx.AsyncClient())
    ps = provider_set(["a"], a=scripted("a"), spare=extra)
    candidates, _ = plan_route(req(), ps, policy="cost")
    assert names(candidates) == ["a"]


# Skips --------------------------------------------------------------------------------


def test_skips_say_why() -> None:
    openai = OpenAIProvider(
        "openai", OpenAIProvider.settings_class(kind="openai"), httpx.AsyncClient()
    )
    ps = provider_set(
        ["ghost", "openai", "off", "open", "dear", "ok"],
        openai=openai,
        off=scripted("off"),
        open=scripted("open"),
        dear=scripted("dear", "0.50"),
        ok=scripted("ok", "0.02"),
    )
    candidates, trace = plan_route(
        req(n=2),
        ps,
        enabled=lambda name: name != "off",
        unavailable={"open": "circuit breaker open (retry in 12.0 s)"},
        max_cost=Decimal("0.10"),
    )
    assert names(candidates) == ["ok"]
    reasons = {e["provider"]: e.get("reason") for e in trace if e["decision"] == "skipped"}
    assert reasons == {
        "ghost": "unknown provider",
        "openai": "not configured",
        "off": "disabled by configuration",
        "open": "circuit breaker open (retry in 12.0 s)",
        "dear": "$0.5 per image above max_cost_per_image $0.10",
    }
    ok = next(e for e in trace if e["provider"] == "ok")
    assert ok["decision"] == "candidate" and ok["estimate_usd"] == "0.04"


def test_capability_skip_names_the_missing_capability() -> None:
    from dataclasses import replace

    from pixelgate.providers.base import ModelInfo
    from pixelgate.providers.placeholder import CAPABILITIES, MODEL

    class Opaque(ScriptedProvider):
        @property
        def models(self) -> dict[str, ModelInfo]:
            caps = replace(CAPABILITIES, transparency=False, max_n=1)
            return {MODEL: ModelInfo(name=MODEL, capabilities=caps)}

    opaque = Opaque("opaque", ScriptedSettings(), httpx.AsyncClient())
    ps = provider_set(["opaque", "any"], opaque=opaque, any=scripted("any"))
    candidates, trace = plan_route(req(background="transparent"), ps)
    assert names(candidates) == ["any"]
    assert trace[0]["reason"] == "no transparency support"
    _, trace = plan_route(req(n=3), ps)
    assert trace[0]["reason"] == "n=3 above the model's maximum 1"


def test_a_provider_that_asked_to_back_off_goes_last() -> None:
    ps = provider_set(["a", "b"], a=scripted("a"), b=scripted("b"))
    candidates, trace = plan_route(req(), ps, deferred={"a": "asked to retry after 3.0 s"})
    assert names(candidates) == ["b", "a"]
    assert trace[0]["deferred"] == "asked to retry after 3.0 s"


# Options ------------------------------------------------------------------------------


def test_options_request_beats_account_beats_settings() -> None:
    routing = RoutingSettings(policy="latency", fallback_on_refusal="never", race=2)
    account = AccountRouting(policy="quality", fallback_image=True, max_cost_per_image=Decimal("1"))
    opts = resolve_options(req(policy="cost", max_cost_per_image="0.5"), account, routing)
    assert opts.policy == "cost"
    assert opts.refusal == "never"
    assert opts.fallback_image is True
    assert opts.max_cost == Decimal("0.5")
    assert opts.parallel == 2
    assert resolve_options(req(), account, routing).policy == "quality"
    assert resolve_options(req(), AccountRouting(), routing).policy == "latency"
    off = RoutingSettings(fallback_image=False)
    assert resolve_options(req(fallback_image=True), account, off).fallback_image is False


def test_refusal_fallback_modes() -> None:
    routing = RoutingSettings()
    explicit = resolve_options(req(), AccountRouting(), routing)
    assert explicit.refusal == "explicit"
    assert not explicit.continue_after_refusal(req())
    assert not explicit.continue_after_refusal(req(provider="a"))
    assert explicit.continue_after_refusal(req(providers=["a", "b"]))
    always = resolve_options(req(fallback_on_refusal=True), AccountRouting(), routing)
    assert always.continue_after_refusal(req())
    never = resolve_options(req(fallback_on_refusal=False), AccountRouting(), routing)
    assert not never.continue_after_refusal(req(providers=["a", "b"]))


def test_hedging_options() -> None:
    routing = RoutingSettings.model_validate({"hedge": {"max_parallel": 3}})
    opts = resolve_options(req(hedge_delay_s=0.5), AccountRouting(), routing)
    assert opts.hedge and opts.hedge_delay_s == 0.5 and opts.parallel == 3
    assert resolve_options(req(hedge=True, race=2), AccountRouting(), routing).parallel == 2
    assert not resolve_options(req(), AccountRouting(), routing).hedge


# Retry backoff ------------------------------------------------------------------------


def test_backoff_is_1_2_4_seconds_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy()
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        for _ in range(50):
            assert base * 0.9 <= policy.delay(attempt, None) <= base * 1.1
    assert policy.delay(1, 3.0) == 3.0
    assert RetryPolicy(max_delay_s=5).delay(10, None) <= 5.5


# Racing -------------------------------------------------------------------------------


class Runner:
    """Candidates are (name, seconds, outcome); records start times."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.cancelled: list[str] = []

    async def run(self, c: tuple[str, float, str], how: str) -> str:
        name, seconds, outcome = c
        self.started[name] = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        if outcome == "refused":
            raise Refused(f"{name} refused")
        if outcome == "fail":
            raise Transient(f"{name} failed")
        return name

    async def accept(self, c: tuple[str, float, str], value: str) -> str:
        if c[2] == "junk":
            raise Transient("junk image")
        return value.upper()


async def test_sequential_moves_on_after_failures() -> None:
    r = Runner()
    race = Race([("a", 0, "fail"), ("b", 0, "junk"), ("c", 0, "ok")], run=r.run, accept=r.accept)
    winner, value = await race.run()
    assert (winner[0], value) == ("c", "C")
    assert [c[0] for c, _ in race.failed] == ["a", "b"]
    assert [s.how for s in race.started] == ["first", "fallback", "fallback"]


async def test_racing_returns_the_fastest_and_cancels_the_rest() -> None:
    r = Runner()
    race = Race(
        [("slow", 5, "ok"), ("fast", 0.01, "ok"), ("later", 0, "ok")],
        run=r.run,
        accept=r.accept,
        parallel=2,
    )
    winner, _ = await asyncio.wait_for(race.run(), 2)
    assert winner[0] == "fast"
    assert r.cancelled == ["slow"]
    assert [c[0] for c, res in race.lost] == ["slow"]
    assert [c[0] for c in race.not_tried] == ["later"]


async def test_hedging_starts_the_next_only_after_the_delay() -> None:
    r = Runner()
    race = Race(
        [("a", 2.0, "ok"), ("b", 0.01, "ok")],
        run=r.run,
        accept=r.accept,
        parallel=2,
        hedge_delay=lambda c: 0.2,
    )
    winner, _ = await race.run()
    assert winner[0] == "b"
    assert r.started["b"] - r.started["a"] >= 0.19
    assert [s.how for s in race.started] == ["first", "hedge"]

    r2 = Runner()
    quick = Race(
        [("a", 0.01, "ok"), ("b", 0, "ok")],
        run=r2.run,
        accept=r2.accept,
        parallel=2,
        hedge_delay=lambda c: 0.5,
    )
    winner, _ = await quick.run()
    assert winner[0] == "a" and "b" not in r2.started


async def test_a_stopping_failure_leaves_the_rest_untried() -> None:
    r = Runner()
    race = Race(
        [("a", 0, "refused"), ("b", 0, "ok")],
        run=r.run,
        accept=r.accept,
        keep_going=lambda c, exc: not isinstance(exc, Refused),
    )
    with pytest.raises(RaceFailed) as info:
        await race.run()
    assert info.value.stopped_by[0] == "a"
    assert [c[0] for c in race.not_tried] == ["b"]


async def test_unexpected_errors_propagate_and_cancel_the_others() -> None:
    async def run(c: str, how: str) -> str:
        if c == "bug":
            raise KeyError("bug")
        await asyncio.sleep(5)
        return c

    async def accept(c: str, v: str) -> str:
        return v

    race: Race[str, str, str] = Race(
        ["slow", "bug"], run=run, accept=accept, parallel=2, errors=(Transient,)
    )
    with pytest.raises(KeyError):
        await asyncio.wait_for(race.run(), 2)
    assert [c for c, _ in race.lost] == ["slow"]
