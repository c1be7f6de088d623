"""Batch files (``pixelgate generate --from-file prompts.jsonl``): one request per line.

A line is a JSON object (a generation request, as ``POST /v1/generations`` takes it), a
JSON string (a prompt) or plain text (a prompt). Blank lines are skipped. Defaults (the
command's flags) fill what a line does not set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pixelgate.core.models import GenerationRequest
from pixelgate.errors import ValidationFailed

__all__ = ["FileRequest", "parse_batch_file"]


@dataclass(frozen=True)
class FileRequest:
    """A request and the (1-based) line it came from."""

    line: int
    request: GenerationRequest


def parse_batch_file(text: str, defaults: dict[str, Any] | None = None) -> list[FileRequest]:
    """Every request of the file, validated.

    Raises:
        ValidationFailed: naming ``line N`` (and the field), for the first bad line.
    """
    parsed: list[FileRequest] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        data = _line_data(line, number)
        merged = {**(defaults or {}), **data}
        if "providers" in data:
            merged.pop("provider", None)
        try:
            request = GenerationRequest.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "request"
            message = "field required" if first["type"] == "missing" else first["msg"]
            raise ValidationFailed(f"line {number}: {field}", message) from None
        parsed.append(FileRequest(line=number, request=request))
    if not parsed:
        raise ValidationFailed("file", "no requests (one JSON request or prompt per line)")
    return parsed


def _line_data(line: str, number: int) -> dict[str, Any]:
    if line[0] not in '{"':
        return {"prompt": line}
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        if line[0] == '"':
            return {"prompt": line}  # plain text that happens to start with a quote
        raise ValidationFailed(f"line {number}", f"invalid JSON: {exc.msg}") from None
    if isinstance(value, str):
        return {"prompt": value}
    if isinstance(value, dict):
        return value
    raise ValidationFailed(f"line {number}", "a JSON object or string is expected")
