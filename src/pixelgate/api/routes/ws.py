"""WebSocket status: a generation's events, or all of an account's, as JSON messages.

The API key never goes in a URL: ``POST /v1/events/tickets`` (authenticated as usual)
returns a short-lived, single-use ticket, and the socket connects with ``?ticket=…``.
Messages are the SSE stream's ``data`` objects plus the event ``id``; ``?last_event_id=N``
resumes after event ``N`` as SSE's ``Last-Event-ID`` does. The server closes the socket
with a code and a reason: 1000 when the generation ended, 4401 for a missing, unknown,
expired or reused ticket, 4404 for a generation the ticket's account cannot see, 4400 for
a bad ``last_event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from pixelgate.api.deps import CurrentCaller, RuntimeDep, visible_account
from pixelgate.api.responses import JSONResponse
from pixelgate.api.schemas import iso
from pixelgate.core.admission import Caller
from pixelgate.core.event_stream import follow_events
from pixelgate.core.feed import follow_account_events
from pixelgate.core.models import EventView
from pixelgate.errors import NotFound
from pixelgate.runtime import Runtime

__all__ = ["event_message", "router", "ws_router"]

log = structlog.get_logger("pixelgate.api.ws")

#: HTTP routes (the ticket); included like every other resource module
router = APIRouter(tags=["events"])
#: the sockets themselves (no HTTP-only route dependencies)
ws_router = APIRouter()

CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
#: bounds the wait of a generation stream whose bus notification was lost
GENERATION_POLL_S = 15.0
#: the account-wide stream reads the database this often
ACCOUNT_POLL_S = 0.5
MAX_ID_LENGTH = 64


@router.post("/v1/events/tickets", status_code=201)
async def create_ticket(runtime: RuntimeDep, caller: CurrentCaller) -> JSONResponse:
    """A single-use ticket for one WebSocket connection, valid ``expires_in`` seconds."""
    ticket = await runtime.tickets.issue(caller)
    ttl = runtime.tickets.ttl_s
    return JSONResponse(
        {"ticket": ticket, "expires_in": int(ttl) if ttl.is_integer() else ttl},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@ws_router.websocket("/v1/generations/{generation_id}/ws")
async def generation_socket(websocket: WebSocket, generation_id: str) -> None:
    """The generation's events until its final one, then a normal close."""
    runtime: Runtime = websocket.app.state.runtime
    opened = await _open(websocket, runtime)
    if opened is None:
        return
    caller, after = opened
    try:
        if len(generation_id) > MAX_ID_LENGTH or not generation_id.isprintable():
            raise NotFound("generation not found")
        await runtime.services.records.get_generation(
            generation_id, account_id=visible_account(caller)
        )
    except NotFound:
        await websocket.close(CLOSE_NOT_FOUND, f"generation {generation_id[:40]!r} not found")
        return
    final: list[str] = []

    async def messages() -> AsyncIterator[dict[str, Any]]:
        async for event in follow_events(
            runtime.services.records,
            runtime.bus,
            generation_id,
            after=after,
            poll_s=GENERATION_POLL_S,
        ):
            final[:] = [event.type]
            yield event_message(event)

    await _pump(websocket, messages(), lambda: f"generation {final[0] if final else 'ended'}")


@ws_router.websocket("/v1/events/ws")
async def account_socket(websocket: WebSocket) -> None:
    """Every event of the ticket's account, from now (or after ``last_event_id``) on."""
    runtime: Runtime = websocket.app.state.runtime
    opened = await _open(websocket, runtime)
    if opened is None:
        return
    caller, after = opened
    if "last_event_id" not in websocket.query_params:
        after = await runtime.services.records.last_event_id()

    async def messages() -> AsyncIterator[dict[str, Any]]:
        async for event in follow_account_events(
            runtime.services.records, caller.account_id, after=after, poll_s=ACCOUNT_POLL_S
        ):
            yield event_message(event)

    await _pump(websocket, messages(), lambda: "stream ended")


def event_message(event: EventView) -> dict[str, Any]:
    """One event as a message: the SSE ``data`` object with the event ``id`` first."""
    return {
        "id": event.id,
        "generation_id": event.generation_id,
        "type": event.type,
        "created_at": iso(event.created_at),
        **event.data,
    }


async def _open(websocket: WebSocket, runtime: Runtime) -> tuple[Caller, int] | None:
    """Accept, redeem the ticket and read ``last_event_id``; on failure close with a reason."""
    await websocket.accept()
    ticket = websocket.query_params.get("ticket")
    if not ticket:
        await websocket.close(
            CLOSE_UNAUTHORIZED, "ticket: missing (get one from POST /v1/events/tickets)"
        )
        return None
    caller = await runtime.tickets.redeem(ticket) if len(ticket) <= 128 else None
    if caller is None:
        await websocket.close(CLOSE_UNAUTHORIZED, "ticket: unknown, expired or already used")
        return None
    raw = websocket.query_params.get("last_event_id", "0")
    if not raw.isdigit() or len(raw) > 20:
        await websocket.close(
            CLOSE_BAD_REQUEST, "last_event_id: must be an event id (a non-negative integer)"
        )
        return None
    return caller, int(raw)


async def _pump(websocket: WebSocket, messages: AsyncIterator[dict[str, Any]], reason: Any) -> None:
    """Send ``messages`` until they end (then close normally with ``reason()``) or the
    client goes away (then stop reading them)."""

    async def send_all() -> None:
        async for message in messages:
            await websocket.send_json(message)
        await websocket.close(CLOSE_NORMAL, str(reason())[:120])

    async def until_disconnect() -> None:
        while True:
            if (await websocket.receive())["type"] == "websocket.disconnect":
                return

    sender = asyncio.create_task(send_all())
    receiver = asyncio.create_task(until_disconnect())
    close_code = CLOSE_NORMAL
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        for task in (sender, receiver):
            try:
                await task
            except (asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                pass
            except Exception:  # the stream's boundary: log it, close the socket
                log.exception("websocket stream failed", path=websocket.url.path)
                close_code = CLOSE_INTERNAL
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(
                    close_code, "internal error" if close_code == CLOSE_INTERNAL else None
                )
