"""The server-sent events reader adapters use on streamed provider answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pixelgate.providers._http import ServerSentEvent, server_sent_events


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _read(*lines: str) -> list[ServerSentEvent]:
    return [event async for event in server_sent_events(_lines(*lines))]


async def test_events_end_at_blank_lines_and_keep_their_names() -> None:
    events = await _read(
        "event: image_generation.partial_image",
        'data: {"a": 1}',
        "",
        'data: {"b": 2}',
        "",
    )
    assert events == [
        ServerSentEvent("image_generation.partial_image", '{"a": 1}'),
        ServerSentEvent(None, '{"b": 2}'),
    ]


async def test_data_lines_join_and_one_leading_space_is_dropped() -> None:
    events = await _read("data:first", "data:  second", "data", "")
    assert events == [ServerSentEvent(None, "first\n second\n")]


async def test_comments_unknown_fields_and_empty_events_are_skipped() -> None:
    events = await _read(": ping", "", "event: lonely", "", "id: 3", "retry: 10", "data: x", "")
    assert events == [ServerSentEvent(None, "x")]


async def test_crlf_line_ends_and_a_last_event_without_blank_line() -> None:
    events = await _read("event: done\r\n", "data: {}\r\n")
    assert events == [ServerSentEvent("done", "{}")]
