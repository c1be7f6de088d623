"""A fake of OpenAI's Images API for GPT image models, streaming included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from tests.fakes import Received, Reply, png_bytes
from tests.providers.kit import b64, parse_multipart

OPENAI_USAGE = {
    "input_tokens": 50,
    "output_tokens": 4160,
    "total_tokens": 4210,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
    "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
}
OPENAI_CREATED = 1713833628
#: the ``CreateImageRequest`` fields of a GPT image generation (PROVIDERS.md §1)
_GPT_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "output_format", "output_compression",
        "background", "moderation", "user", "stream", "partial_images", "input_fidelity",
    }
)  # fmt: skip


class FakeOpenAIImages:
    """``POST …/images/generations`` and ``…/images/edits`` of OpenAI, GPT image models.

    Checks the streaming fields as the spec has them (``stream`` a bool, ``partial_images``
    0-3 and only with ``stream``) and records each request's fields in ``requests``.
    Answers an ``ImagesResponse``, or with ``stream: true`` the SSE wire protocol:
    ``event: image_generation.partial_image`` (``image_edit.…`` for edits) for each of
    ``partial_images`` previews, then one ``….completed`` with ``usage``. ``handler`` is an
    ``httpx.MockTransport`` handler that streams event by event, awaiting ``pause`` (if
    set) before each one after the first; ``route`` serves a :class:`LoopbackServer`.
    """

    def __init__(
        self,
        *,
        image: bytes | None = None,
        partials: list[bytes] | None = None,
        pause: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.image = image or png_bytes(64, 64, (30, 90, 200))
        self.partials = (
            partials
            if partials is not None
            else [png_bytes(64, 64, (60 * i, 40, 40)) for i in range(1, 4)]
        )
        self.pause = pause
        self.requests: list[dict[str, Any]] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        fields = _openai_fields(request.headers["content-type"], request.content)
        body, events = self._answer(request.url.path, fields)
        if events is None:
            return httpx.Response(200, json=body)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=self._stream(events)
        )

    def route(self, received: Received) -> Reply:
        headers = {name.lower(): value for name, value in received.headers.items()}
        fields = _openai_fields(headers.get("content-type", ""), received.body)
        body, events = self._answer(received.path, fields)
        if events is None:
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        payload = b"".join(_sse(event) for event in events)
        return 200, {"Content-Type": "text/event-stream"}, payload

    def _answer(
        self, path: str, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """The JSON body, or (for ``stream: true``) the events to send."""
        self.requests.append(fields)
        assert set(fields) <= _GPT_FIELDS, set(fields) - _GPT_FIELDS
        assert str(fields["model"]).startswith("gpt-image")
        stream = fields.get("stream", False)
        assert stream in (True, False), f"stream must be a boolean, got {stream!r}"
        partial = fields.get("partial_images")
        if partial is not None:
            assert stream, "partial_images is for streaming responses only"
            assert isinstance(partial, int) and 0 <= partial <= 3
        echo = {
            "size": fields.get("size", "auto"),
            "quality": fields.get("quality", "auto"),
            "background": fields.get("background", "auto"),
            "output_format": fields.get("output_format", "png"),
        }
        if not stream:
            data = [{"b64_json": b64(self.image)} for _ in range(int(fields.get("n", 1)))]
            return {"created": OPENAI_CREATED, "data": data, **echo, "usage": OPENAI_USAGE}, None
        kind = "image_edit" if path.endswith("/images/edits") else "image_generation"
        events = [
            {
                "type": f"{kind}.partial_image",
                "b64_json": b64(preview),
                "created_at": OPENAI_CREATED,
                **echo,
                "partial_image_index": index,
            }
            for index, preview in enumerate(self.partials[: partial or 0])
        ]
        events.append(
            {
                "type": f"{kind}.completed",
                "b64_json": b64(self.image),
                "created_at": OPENAI_CREATED,
                **echo,
                "usage": OPENAI_USAGE,
            }
        )
        return {}, events

    async def _stream(self, events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
        for position, event in enumerate(events):
            if position and self.pause is not None:
                await self.pause(position)
            yield _sse(event)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _openai_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """A JSON body as it is; a multipart one's text fields, typed as OpenAI reads them."""
    if content_type.startswith("application/json"):
        fields: dict[str, Any] = json.loads(body)
        return fields
    form: dict[str, Any] = {}
    for part in parse_multipart(content_type, body).parts:
        if part.filename is None:
            value = part.data.decode()
            form[part.name] = {"true": True, "false": False}.get(value, value)
    for name in ("n", "partial_images"):
        if name in form:
            form[name] = int(form[name])
    return form
