"""A job handed to this process's worker at admission runs on the plan admission priced
it with, unless what the plan depends on changed in between (``RoutePlanner.hand_over``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

import pixelgate.core.planning as planning
from pixelgate.config import Settings
from pixelgate.core.models import GenerationRequest
from pixelgate.core.planning import RoutePlanner
from pixelgate.resilience.breaker import Outcome
from pixelgate.runtime import Runtime


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        providers={"first": {"kind": "placeholder"}, "second": {"kind": "placeholder"}},
        routing={"default": ["first", "second"]},
    )


@pytest.fixture
def embedded_worker(backend: str) -> None:
    """A hand-over happens between admission and this process's own worker."""
    if backend != "sqlite":
        pytest.skip("the embedded worker's hand-over: on scale-out the queue engine delivers jobs")


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per route actually planned (not handed over)."""
    made: list[int] = []
    plan_route = planning.plan_route

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return plan_route(*args, **kwargs)

    monkeypatch.setattr(planning, "plan_route", counting)
    return made


async def test_a_job_run_by_this_process_is_planned_once(
    embedded_worker: None, client: httpx.AsyncClient, plans: list[int]
) -> None:
    body = {"prompt": "a lighthouse", "width": 64, "height": 64}
    r = await client.post("/v1/generations", json=body, headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCEEDED"
    assert r.json()["provider"] == "first"
    assert len(plans) == 1  # admission's, reused by the run
    estimate = await client.post("/v1/estimate", json=body)
    assert estimate.status_code == 200
    assert len(plans) == 2  # an estimate hands nothing over


async def _handed(runtime: Runtime, generation_id: str) -> tuple[RoutePlanner, Any, Any]:
    planner: RoutePlanner = runtime.pipeline.planner
    account = await runtime.store.get_account_cached(
        (await runtime.store.create_account(f"acct-{generation_id}", credits=100)).id
    )
    request = GenerationRequest.model_validate({"prompt": "x", "width": 64, "height": 64})
    plan = await planner.plan(request, account)
    planner.hand_over(generation_id, plan, account)
    return planner, account, request


async def test_a_handed_plan_is_used_once(runtime: Runtime, plans: list[int]) -> None:
    planner, account, request = await _handed(runtime, "gen_once")
    first = await planner.plan(request, account, live=True, generation_id="gen_once")
    again = await planner.plan(request, account, live=True, generation_id="gen_once")
    assert [c.provider.name for c in first.candidates] == ["first", "second"]
    assert again is not first
    assert len(plans) == 2  # the admission's, then the second run's own


async def test_a_provider_backing_off_since_admission_is_planned_again(
    runtime: Runtime,
) -> None:
    planner, account, request = await _handed(runtime, "gen_paused")
    await runtime.pipeline.control.outbound.pause("first", 30.0)
    run = await planner.plan(request, account, live=True, generation_id="gen_paused")
    assert [c.provider.name for c in run.candidates] == ["second", "first"]
    assert "asked to retry" in run.candidates[1].trace["deferred"]


async def test_a_breaker_opened_since_admission_is_planned_again(runtime: Runtime) -> None:
    planner, account, request = await _handed(runtime, "gen_breaker")
    breakers = runtime.pipeline.control.breakers
    for _ in range(50):  # failures until it trips
        permit, _ = await breakers.allow("first")
        if not permit.allowed:
            break
        await breakers.record("first", permit, Outcome.FAILURE, "provider_unavailable")
    run = await planner.plan(request, account, live=True, generation_id="gen_breaker")
    assert [c.provider.name for c in run.candidates] == ["second"]


async def test_a_configuration_change_since_admission_is_planned_again(
    runtime: Runtime,
) -> None:
    planner, account, request = await _handed(runtime, "gen_config")
    control = runtime.pipeline.control
    changed = control.routing.model_copy(update={"default": ["second", "first"]})
    control.apply(changed, version=control.version + 1, overrides={})
    run = await planner.plan(request, account, live=True, generation_id="gen_config")
    assert [c.provider.name for c in run.candidates] == ["second", "first"]


async def test_handed_plans_are_bounded(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "MAX_HANDED_PLANS", 3)
    planner, account, request = await _handed(runtime, "gen_0")
    plan = await planner.plan(request, account)
    for i in range(1, 6):  # runs that never started (canceled while waiting)
        planner.hand_over(f"gen_{i}", plan, account)
    assert list(planner._handed) == ["gen_3", "gen_4", "gen_5"]


BODIES = [
    {"prompt": "  a lighthouse  ", "width": 64, "height": 64},
    {
        "prompt": "a fox",
        "negative_prompt": "blur",
        "width": 96,
        "height": 64,
        "format": "WEBP",
        "seed": 7,
        "n": 2,
        "project": "p1",
        "options": {"steps": 4},
    },
    {"prompt": "a harbour", "providers": ["second", "first"], "max_cost_per_image": "0.5"},
]


@pytest.mark.parametrize("body", BODIES)
async def test_the_run_takes_the_request_admission_validated(
    client: httpx.AsyncClient,
    runtime: Runtime,
    embedded_worker: None,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
) -> None:
    """The stored request is the validated one's dump: the run of a handed-over job takes
    the validated request itself (not validated twice), equal to the stored one's."""
    import pixelgate.core.execution as execution

    class NotAgain(GenerationRequest):
        @classmethod
        def model_validate(cls, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the run validated the stored request again")

    handed: dict[str, GenerationRequest | None] = {}
    planner = runtime.pipeline.planner
    hand_over = planner.hand_over

    def recording(generation_id: str, *args: Any) -> None:
        hand_over(generation_id, *args)
        handed[generation_id] = planner.handed_request(generation_id)

    monkeypatch.setattr(execution, "GenerationRequest", NotAgain)
    monkeypatch.setattr(planner, "hand_over", recording)
    r = await client.post("/v1/generations", json=body, headers={"Prefer": "wait=10"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "SUCCEEDED", r.text
    [request] = handed.values()
    assert request is not None
    assert GenerationRequest.model_validate(r.json()["request"]) == request


async def test_account_routing_is_validated_again_only_when_it_changed(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every plan reads the account's routing settings; they are validated once while
    they stay equal, and a change (a new view, or the same dict changed) is seen at once."""
    planner, account, request = await _handed(runtime, "gen_routing")
    parsed: list[dict[str, Any]] = []
    parse = planning.AccountRouting.parse

    def counting(data: dict[str, Any], **kwargs: Any) -> Any:
        parsed.append(data)
        return parse(data, **kwargs)

    monkeypatch.setattr(planning.AccountRouting, "parse", counting)
    account.settings["routing"] = {"policy": "cost"}
    assert (await planner.plan(request, account)).options.policy == "cost"
    assert (await planner.plan(request, account)).options.policy == "cost"
    assert parsed == [{"policy": "cost"}]
    account.settings["routing"]["policy"] = "quality"  # changed in place
    assert (await planner.plan(request, account)).options.policy == "quality"
    assert len(parsed) == 2
