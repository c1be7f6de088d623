"""The dedup cache inside transactions: find an identical earlier generation at
admission, and finish the generations that waited for one (its followers) together with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, insert, literal, select, update

from pixelgate.core.models import Status
from pixelgate.db.ledger import add_usage, refund, usage_row
from pixelgate.db.records import CACHE_PROVIDER, GEN, IMG, CacheLookup, NewImage
from pixelgate.db.rows import add_images, event_row, insert_events
from pixelgate.db.tables import EntityLink

__all__ = ["CacheMatch", "add_links_and_cache", "cache_match", "settle_followers"]


@dataclass(frozen=True)
class CacheMatch:
    #: a generation id, or ``#<index>`` for an earlier member of the same batch
    source_id: str
    #: True: SUCCEEDED, copy it now; False: running, follow it
    done: bool
    provider: str | None = None
    model: str | None = None


def cache_match(c: Connection, account_id: str, cache: CacheLookup) -> CacheMatch | None:
    """An earlier identical SUCCEEDED original to copy, or a running one to follow."""
    if not cache.use:
        return None
    same = (
        GEN.c.account_id == account_id,
        GEN.c.cache_key == cache.key,
        GEN.c.cached_from.is_(None),
    )
    done = c.execute(
        select(GEN.c.id, GEN.c.provider, GEN.c.model)
        .where(*same, GEN.c.status == Status.SUCCEEDED.value, GEN.c.fallback_image.is_(False))
        .order_by(GEN.c.id.desc())
        .limit(1)
    ).first()
    if done is not None:
        return CacheMatch(source_id=done[0], done=True, provider=done[1], model=done[2])
    running = c.scalar(
        select(GEN.c.id)
        .where(*same, GEN.c.status.in_((Status.PENDING.value, Status.PROCESSING.value)))
        .order_by(GEN.c.id)
        .limit(1)
    )
    if running is not None:
        return CacheMatch(source_id=running, done=False)
    return None


def add_links_and_cache(
    c: Connection,
    gen_id: str,
    account_id: str,
    *,
    cache: CacheLookup | None,
    match: CacheMatch | None,
    entities: Sequence[tuple[str, str]],
    credits: int,
    now: datetime,
) -> None:
    """In the admission transaction: the entity links, and a cache hit served at once
    or a follower parked behind its leader."""
    links = [
        {
            "generation_id": gen_id,
            "account_id": account_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "created_at": now,
        }
        for entity_type, entity_id in dict.fromkeys(entities)
    ]
    if links:
        c.execute(insert(EntityLink), links)
    if cache is None or match is None:
        return
    source: str | None = match.source_id
    if source is not None and source.startswith("#"):
        # the leader is an earlier member of the same batch: find its id by key
        source = c.scalar(
            select(GEN.c.id)
            .where(
                GEN.c.account_id == account_id,
                GEN.c.cache_key == cache.key,
                GEN.c.cached_from.is_(None),
                GEN.c.status == Status.PENDING.value,
            )
            .order_by(GEN.c.id)
            .limit(1)
        )
    values: dict[str, Any] = {"cached_from": source}
    if not match.done:
        c.execute(update(GEN).where(GEN.c.id == gen_id).values(**values))
        if source is not None:
            insert_events(c, [event_row(gen_id, "waiting", {"cached_from": source}, now)])
        return
    images = c.execute(select(IMG).where(IMG.c.generation_id == source).order_by(IMG.c.index)).all()
    values.update(
        status=Status.SUCCEEDED.value,
        progress=100,
        provider=match.provider,
        model=match.model,
        cost_usd=Decimal("0"),
        started_at=now,
        completed_at=now,
        route=[{"provider": CACHE_PROVIDER, "decision": "cached", "cached_from": source}],
    )
    c.execute(update(GEN).where(GEN.c.id == gen_id).values(**values))
    _served_from_cache(
        c,
        gen_id,
        account_id,
        images,
        credits,
        now,
        provider=match.provider,
        model=match.model,
        source=source,
    )


def settle_followers(
    c: Connection,
    leader_id: str,
    now: datetime,
    *,
    images: Sequence[NewImage] | None = None,
    provider: str | None = None,
    model: str | None = None,
    error: str | None = None,
) -> None:
    """Finish the generations waiting for ``leader_id``, in the leader's own finishing
    transaction (so no crash can strand them): copies of its images when it succeeded,
    else ``FAILED`` (``cache_leader_failed``) with their debit refunded."""
    message = f"the identical generation {leader_id} it waited for {error or 'failed'}"
    if images is not None:
        outcome: dict[str, Any] = {
            "status": Status.SUCCEEDED.value,
            "progress": 100,
            "provider": provider,
            "model": model,
            "cost_usd": Decimal("0"),
            "route": [{"provider": CACHE_PROVIDER, "decision": "cached", "cached_from": leader_id}],
        }
    else:
        outcome = {
            "status": Status.FAILED.value,
            "error_code": "cache_leader_failed",
            "error_message": message,
        }
    rows = c.execute(
        update(GEN)
        .where(GEN.c.cached_from == leader_id, GEN.c.status == Status.PENDING.value)
        .values(
            **outcome,
            started_at=func.coalesce(GEN.c.started_at, literal(now, GEN.c.started_at.type)),
            completed_at=now,
            updated_at=now,
        )
        .returning(GEN.c.id, GEN.c.account_id, GEN.c.credits)
    ).all()
    for gen_id, account_id, credits in rows:
        if images is not None:
            _served_from_cache(
                c,
                gen_id,
                account_id,
                images,
                int(credits),
                now,
                provider=provider,
                model=model,
                source=leader_id,
            )
        else:
            refunded = refund(c, gen_id, "shared generation failed", now)
            data: dict[str, Any] = {
                "code": "cache_leader_failed",
                "message": message,
                "refunded_credits": refunded,
                "cached_from": leader_id,
            }
            insert_events(c, [event_row(gen_id, "failed", data, now)])


def _served_from_cache(
    c: Connection,
    gen_id: str,
    account_id: str,
    images: Sequence[Any],
    credits: int,
    now: datetime,
    *,
    provider: str | None,
    model: str | None,
    source: str | None,
) -> None:
    """A generation answered by another one's images: its copies, usage and final event."""
    add_images(c, gen_id, account_id, images, now)
    add_usage(
        c,
        usage_row(
            account_id,
            CACHE_PROVIDER,
            "",
            now,
            ok=True,
            images=len(images),
            credits=credits,
            usd=None,
            provider_ms=None,
        ),
    )
    data = {"provider": provider, "model": model, "images": len(images), "cached_from": source}
    insert_events(c, [event_row(gen_id, "succeeded", data, now)])
