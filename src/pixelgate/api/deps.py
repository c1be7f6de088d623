"""Dependency aliases for routes: the runtime, the caller behind the API key, the request id."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated

from fastapi import Depends, Header, Request

from pixelgate.core.keys import hash_key
from pixelgate.core.pipeline import Caller
from pixelgate.errors import AuthenticationFailed, Forbidden, ValidationFailed
from pixelgate.runtime import Runtime
from pixelgate.shared_loads import SharedLoads
from pixelgate.ui.session import session_key_hash

__all__ = [
    "AdminCaller",
    "CurrentCaller",
    "IdempotencyKey",
    "KeyCache",
    "RequestId",
    "RuntimeDep",
    "cached_caller",
    "caller_for_hash",
    "usable_idempotency_key",
]

KEY_CACHE_TTL_S = 10.0
KEY_CACHE_MAX = 10_000
MAX_IDEMPOTENCY_KEY = 255
#: visible ASCII only: a key is compared byte for byte, so no spaces or look-alikes
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


class KeyCache:
    """Hash → caller, for a few seconds: one hash lookup per request, not one query.

    Requests that miss at the same moment (a burst after the entry expired) share one
    lookup: 2,000 requests at once made 2,000 queries through the four read connections
    before. A revoked key stops working here at once (:meth:`drop` and :meth:`clear` also
    discard a lookup under way) and in other processes within the TTL.
    """

    def __init__(self, ttl_s: float = KEY_CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Caller | None]] = {}
        self._loads: SharedLoads[str, Caller | None] = SharedLoads()

    def get(self, key_hash: str) -> tuple[bool, Caller | None]:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key_hash: str, caller: Caller | None) -> None:
        if len(self._entries) >= KEY_CACHE_MAX:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl_s, caller)

    async def load(
        self, key_hash: str, lookup: Callable[[], Awaitable[Caller | None]]
    ) -> Caller | None:
        """``lookup()``'s caller, cached; one lookup at a time per hash, shared by all
        who miss meanwhile (:class:`~pixelgate.shared_loads.SharedLoads`)."""
        return await self._loads.get(key_hash, lookup, partial(self.put, key_hash))

    def drop(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)
        self._loads.forget(key_hash)

    def clear(self) -> None:
        self._entries.clear()
        self._loads.clear()


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


#: methods a UI session cookie may authenticate on the API: reads only (the browser's
#: EventSource cannot send a header); anything that changes state needs the API key
COOKIE_METHODS = frozenset({"GET", "HEAD"})


async def get_caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    if not header and request.method in COOKIE_METHODS:
        runtime: Runtime = request.app.state.runtime
        session_hash = session_key_hash(request, runtime.settings)
        if session_hash is not None:
            return await caller_for_hash(request, session_hash)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("missing bearer API key (Authorization: Bearer <key>)")
    return await caller_for_hash(request, hash_key(token))


async def caller_for_hash(request: Request, key_hash: str) -> Caller:
    """The caller behind a key hash (cached for a few seconds); 401 when unknown or revoked."""
    state = request.app.state
    caller = await cached_caller(state.key_cache, state.runtime, key_hash)
    if caller is None:
        raise AuthenticationFailed("invalid API key")
    return caller


async def cached_caller(cache: KeyCache, runtime: Runtime, key_hash: str) -> Caller | None:
    """The caller behind a key hash, from ``cache`` for a few seconds; None when unknown."""
    hit, caller = cache.get(key_hash)
    if hit:
        return caller

    async def lookup() -> Caller | None:
        info = await runtime.services.records.lookup_key(key_hash)
        if info is None:
            return None
        return Caller(
            account_id=info.account_id,
            account_name=info.account_name,
            is_admin=info.is_admin,
            key_id=info.key_id,
        )

    return await cache.load(key_hash, lookup)


async def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=MAX_IDEMPOTENCY_KEY,
            description="replays the first answer for a repeated key (1-255 visible ASCII)",
        ),
    ] = None,
) -> str | None:
    """The ``Idempotency-Key`` header; an empty, blank or non-ASCII key is refused (422).

    An empty key must never reach admission: it would be treated as "no key" when looked up
    and stored as ``""``, so the next empty key would collide with it.
    """
    if idempotency_key is None:
        return None
    key = usable_idempotency_key(idempotency_key)
    if key is None:
        raise ValidationFailed(
            "Idempotency-Key", "must be 1-255 visible ASCII characters (no spaces)"
        )
    return key


def usable_idempotency_key(value: str) -> str | None:
    """The key without surrounding blanks, or None when it is not 1-255 visible ASCII."""
    key = value.strip()
    if not key or not key.isascii() or not key.isprintable() or " " in key:
        return None
    return key


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this route needs an admin key")
    return caller


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]
AdminCaller = Annotated[Caller, Depends(get_admin)]
RequestId = Annotated[str, Depends(get_request_id)]
IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]


def visible_account(caller: Caller) -> str | None:
    """The account filter for reads: admins see every account, others only their own."""
    return None if caller.is_admin else caller.account_id
