"""The live routing configuration and the resilience state built from it.

Configuration layers: defaults < TOML < environment (``Settings.routing``) < the latest
hot configuration set through ``PUT /admin/config`` (stored, versioned, in the
``config_versions`` table). A change made in this process applies to the next job at
once; other processes notice a newer version within :data:`REFRESH_S`.

The breakers, gates, rate windows and pauses come from
:func:`~pixelgate.resilience.shared.open_shared_state`: process memory, or Redis shared
by every process of a scale-out deployment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from pixelgate.config import RoutingSettings, Settings
from pixelgate.errors import ValidationFailed
from pixelgate.providers.base import DEFAULT_TIMEOUT_S
from pixelgate.providers.registry import ProviderSet
from pixelgate.resilience.breaker import Breakers
from pixelgate.resilience.outbound import DEFAULT_KEY, OutboundLimiter
from pixelgate.resilience.retry import Clock, RetryPolicy
from pixelgate.resilience.shared import SharedState, open_shared_state
from pixelgate.resilience.stats import AttemptStats

__all__ = ["REFRESH_S", "ConfigSource", "RoutingControl", "deep_merge"]

log = structlog.get_logger("pixelgate.config")

#: how often a process looks for a hot configuration written by another process
REFRESH_S = 5.0
DEFAULT_PRIORITY = 100
HOT_SECTIONS = ("routing",)


class ConfigSource(Protocol):
    """Where hot configuration versions are stored (the Store)."""

    async def latest_config_version(self) -> int: ...

    async def latest_config(self) -> dict[str, Any] | None:
        """``{"version", "data", "actor", "created_at"}`` of the newest version."""


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: objects merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class RoutingControl:
    """Effective routing settings + breakers, outbound limits and attempt statistics."""

    def __init__(
        self,
        settings: Settings,
        providers: ProviderSet,
        *,
        source: ConfigSource | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.base = settings.routing
        self.providers = providers
        self.source = source
        #: breakers, gates, windows and pauses (opened here from ``settings`` if not given)
        self.shared = shared or open_shared_state(settings)
        self.clock: Clock = self.shared.clock
        self.routing: RoutingSettings = settings.routing
        #: the retry policy per provider of one routing configuration (built per attempt,
        #: it was a model_dump each): made again when the configuration is replaced
        self._retries: tuple[RoutingSettings, dict[str, RetryPolicy]] = (self.routing, {})
        self.version = 0
        self.overrides: dict[str, Any] = {}
        self.actor: str | None = None
        self.updated_at: datetime | None = None
        self.breakers: Breakers = self.shared.breakers
        self.outbound = OutboundLimiter(
            self.routing.outbound,
            gates=self.shared.gates,
            windows=self.shared.windows,
            pauses=self.shared.pauses,
            clock=self.clock,
        )
        self.stats = AttemptStats()
        self._checked_at = float("-inf")
        #: the newest stored version looked at (applied, or rejected as invalid)
        self._seen = 0
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (cancelling race losers at their provider)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Reading --------------------------------------------------------------

    async def current(self) -> RoutingSettings:
        """The routing settings for the next job (refreshed from the store when stale)."""
        await self.refresh()
        return self.routing

    def chain(self) -> list[str]:
        """The fallback chain, ordered by priority (stable: equal priorities keep order)."""
        names = list(self.routing.default) or list(self.providers.default_chain)
        return sorted(names, key=self.priority)

    def priority(self, provider: str) -> int:
        override = self.routing.providers.get(provider)
        if override is not None and override.priority is not None:
            return override.priority
        return DEFAULT_PRIORITY

    def enabled(self, provider: str) -> bool:
        override = self.routing.providers.get(provider)
        return override is None or override.enabled is not False

    def timeout_for(self, provider: str) -> float:
        override = self.routing.providers.get(provider)
        if override is not None and override.timeout_s is not None:
            return override.timeout_s
        found = self.providers.find(provider)
        return found.settings.timeout_s if found is not None else DEFAULT_TIMEOUT_S

    def retry_for(self, provider: str) -> RetryPolicy:
        routing, made = self._retries
        if routing is not self.routing:
            routing, made = self._retries = (self.routing, {})
        policy = made.get(provider)
        if policy is None:
            policy = RetryPolicy.from_settings(routing.retry)
            override = routing.providers.get(provider)
            if override is not None and override.attempts is not None:
                policy = RetryPolicy(**{**policy.__dict__, "attempts": override.attempts})
            made[provider] = policy
        return policy

    def public(self) -> dict[str, Any]:
        """What ``GET /admin/config`` shows."""
        return {
            "version": self.version,
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z")
            if self.updated_at
            else None,
            "actor": self.actor,
            "config": {"routing": self.routing.model_dump(mode="json")},
            "overrides": self.overrides,
            "chain": self.chain(),
        }

    # Changing -------------------------------------------------------------

    def validate(self, document: dict[str, Any]) -> RoutingSettings:
        """A hot configuration document over the file/env settings, validated.

        Raises:
            ValidationFailed: names the bad field (``routing.retry.attempts``).
        """
        unknown = [k for k in document if k not in HOT_SECTIONS]
        if unknown:
            raise ValidationFailed(unknown[0], "not hot-configurable (allowed: routing)")
        patch = document.get("routing") or {}
        if not isinstance(patch, dict):
            raise ValidationFailed("routing", "must be an object")
        merged = deep_merge(self.base.model_dump(mode="json"), patch)
        try:
            routing = RoutingSettings.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["routing", *(str(p) for p in first["loc"])])
            raise ValidationFailed(where, str(first["msg"])) from None
        self._check_names("routing.default", routing.default)
        self._check_names("routing.pool", routing.pool or [])
        self._check_names("routing.outbound", [k for k in routing.outbound if k != DEFAULT_KEY])
        self._check_names("routing.providers", routing.providers)
        return routing

    def _check_names(self, field: str, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.providers:
                raise ValidationFailed(field, f"unknown provider {name!r}", code="unknown_provider")

    def apply(
        self,
        routing: RoutingSettings,
        *,
        version: int,
        overrides: dict[str, Any],
        actor: str | None = None,
        updated_at: datetime | None = None,
    ) -> None:
        """Make ``routing`` the live configuration (the next job uses it)."""
        self.routing = routing
        self.version = self._seen = version
        self.overrides = overrides
        self.actor = actor
        self.updated_at = updated_at
        self.breakers.configure(routing.breaker)
        self.outbound.configure(routing.outbound)
        log.info("routing_config_applied", version=version, actor=actor)

    async def refresh(self, *, force: bool = False) -> None:
        """Pick up a newer stored version (at most every :data:`REFRESH_S`)."""
        if self.source is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < REFRESH_S:
            return
        async with self._lock:
            if not force and now - self._checked_at < REFRESH_S:
                return
            self._checked_at = now
            latest = await self.source.latest_config_version()
            if latest in (self.version, self._seen):
                return
            record = await self.source.latest_config()
            if record is None:
                return
            self._seen = int(record["version"])
            try:
                routing = self.validate(record["data"])
            except ValidationFailed as exc:
                # e.g. a provider removed from the file since: keep what runs now
                log.error("routing_config_invalid", version=record["version"], error=exc.message)
                return
            self.apply(
                routing,
                version=int(record["version"]),
                overrides=record["data"],
                actor=record.get("actor"),
                updated_at=record.get("created_at"),
            )
