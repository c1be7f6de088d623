"""One way to plan a request's route: the run plans with it, and admission prices with it.

Admission's estimate (``POST /v1/estimate``, the budget check, ``estimated_usd``) and
the worker's run use the same options (request > account > settings), the same
policy, chain, pool, priorities, cost cap and prices, so a request is priced at the
provider that will serve it. Only the live state — open circuit breakers and
providers that asked to back off — is left out of an estimate: it changes by the
second, and the run reads it when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pixelgate.config import RoutingSettings
from pixelgate.core.attempts import LATENCY_POLICY_PERCENTILE
from pixelgate.core.materialize import provider_request
from pixelgate.core.models import AccountView, GenerationRequest
from pixelgate.core.routing import (
    AccountRouting,
    Candidate,
    RouteOptions,
    known_price,
    plan_route,
    resolve_options,
)
from pixelgate.providers.base import Provider
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.breaker import BreakerState
from pixelgate.resilience.routing_control import RoutingControl

__all__ = ["MAX_HANDED_PLANS", "RoutePlan", "RoutePlanner"]

#: plans kept for runs about to start; more than a worker runs at once is a leak
MAX_HANDED_PLANS = 10_000
#: accounts whose validated routing settings are kept (the oldest go first)
MAX_ACCOUNT_ROUTINGS = 10_000


@dataclass(frozen=True)
class RoutePlan:
    """The options, candidates in order and decision trace of one request."""

    options: RouteOptions
    routing: RoutingSettings
    account: AccountRouting
    candidates: list[Candidate]
    trace: list[dict[str, Any]]

    @property
    def estimate_usd(self) -> Decimal | None:
        """The price of the first candidate: the one the run tries first."""
        return self.candidates[0].estimate_usd if self.candidates else None


@dataclass(frozen=True)
class _HandedPlan:
    plan: RoutePlan
    account: AccountView
    #: the request admission validated (the run's copy of the stored one)
    request: GenerationRequest | None


class RoutePlanner:
    """Plans routes over the live routing configuration (``RoutingControl``)."""

    def __init__(self, providers: ProviderSet, control: RoutingControl) -> None:
        self.providers = providers
        self.control = control
        #: generation id → the plan admission priced it with, for this process's run
        self._handed: dict[str, _HandedPlan] = {}
        #: account id → its routing settings as last read, and them validated
        self._routing_of: dict[str, tuple[dict[str, Any], AccountRouting]] = {}

    def hand_over(
        self,
        generation_id: str,
        plan: RoutePlan,
        account: AccountView,
        request: GenerationRequest | None = None,
    ) -> None:
        """Keep admission's plan (and validated ``request``) for the run of
        ``generation_id`` that this process's worker starts next, so an unchanged
        situation is not planned twice, nor the stored request validated again."""
        if len(self._handed) >= MAX_HANDED_PLANS:  # runs that never asked (canceled)
            del self._handed[next(iter(self._handed))]
        self._handed[generation_id] = _HandedPlan(plan, account, request)

    def handed_request(self, generation_id: str) -> GenerationRequest | None:
        """The request admission validated for ``generation_id`` in this process, if any
        (the stored request is its ``model_dump``)."""
        handed = self._handed.get(generation_id)
        return None if handed is None else handed.request

    async def plan(
        self,
        request: GenerationRequest,
        account: AccountView,
        *,
        live: bool = False,
        generation_id: str | None = None,
    ) -> RoutePlan:
        """Plan ``request`` for ``account``; ``live`` also skips open breakers and defers
        providers that asked to back off (the run's view).

        The run of a generation whose plan admission handed over reuses it when nothing
        it depends on has changed since: the same routing configuration and account, none
        of its candidates behind an open breaker or backing off (the live state an
        estimate leaves out), and not the latency policy (its ranking follows the latest
        attempts).
        """
        control = self.control
        routing = await control.current()
        handed = self._handed.pop(generation_id, None) if generation_id else None
        if (
            handed is not None
            and handed.plan.routing is routing
            and handed.account is account
            and handed.plan.options.policy != "latency"
        ):
            # the live state changes a plan only through its candidates
            names = [candidate.provider.name for candidate in handed.plan.candidates]
            if not live or not any(await self._live_state(names)):
                return handed.plan
        unavailable, deferred = await self._live_state(self.providers.names()) if live else ({}, {})
        account_routing = self._account_routing(account)
        options = resolve_options(request, account_routing, routing)

        def quality(provider: Provider) -> float | None:
            override = routing.providers.get(provider.name)
            return override.quality if override is not None else None

        candidates, trace = plan_route(
            request,
            self.providers,
            preferred=[*account.preferred_providers, *account_routing.preferred],
            policy=options.policy,
            chain=control.chain(),
            pool=routing.pool,
            priority=control.priority,
            enabled=control.enabled,
            quality=quality,
            latency_ms=lambda name: control.stats.latency_ms(name, LATENCY_POLICY_PERCENTILE),
            unavailable=unavailable,
            deferred=deferred,
            max_cost=options.max_cost,
            require_price=account.daily_budget_usd is not None,
            price=lambda provider, model: known_price(provider, provider_request(request, model)),
        )
        return RoutePlan(options, routing, account_routing, candidates, trace)

    def _account_routing(self, account: AccountView) -> AccountRouting:
        """The account's routing settings, validated once while they stay equal (every
        plan asks; validating them again cost ~5 µs)."""
        data = account.settings.get("routing")
        settings = dict(data) if isinstance(data, dict) else {}
        known = self._routing_of.get(account.id)
        if known is not None and known[0] == settings:
            return known[1]
        parsed = AccountRouting.parse(settings, account_id=account.id)
        if len(self._routing_of) >= MAX_ACCOUNT_ROUTINGS:
            del self._routing_of[next(iter(self._routing_of))]
        self._routing_of[account.id] = (settings, parsed)
        return parsed

    async def _live_state(self, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        control = self.control
        if control.breakers.known_closed(names) and control.outbound.known_unpaused(names):
            return {}, {}  # the usual answer, without building every snapshot (~20 µs)
        unavailable: dict[str, str] = {}
        for name, snap in (await control.breakers.snapshots(names)).items():
            if snap.state == BreakerState.OPEN and (snap.retry_in_s or 0) > 0:
                unavailable[name] = f"circuit breaker open (retry in {snap.retry_in_s:.1f} s)"
            elif snap.state == BreakerState.HALF_OPEN and snap.probes_in_flight > 0:
                unavailable[name] = "circuit breaker half-open: a probe is in flight"
        deferred = {
            name: f"asked to retry after {left:.1f} s"
            for name, left in (await control.outbound.paused(names)).items()
            if left > 0
        }
        return unavailable, deferred
