"""A fake xAI image API (PROVIDERS-2.md §7); error shapes partly unconfirmed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.providers.kit import JPEG, SECRET, b64, bearer, hang, reply

XAI_RATIOS = {
    "1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9",
    "1:2", "2:1", "21:9", "5:2", "auto",
}  # fmt: skip
_XAI_FIELDS = {
    "model", "prompt", "n", "aspect_ratio", "resolution", "response_format", "quality",
    "image", "user",
}  # fmt: skip


@dataclass
class XAIFake:
    """``/v1/images/generations`` and ``/v1/images/edits`` (JSON only)."""

    key: str = SECRET
    fail: str | None = None
    retry_after: str = "2"

    def __call__(self, request: httpx.Request) -> httpx.Response | Any:
        if bearer(request) != self.key:
            # shape unconfirmed (PROVIDERS-2 §7); xAI's chat API answers like this
            return reply(
                400,
                {
                    "code": "Client specified an invalid argument",
                    "error": "Incorrect API key provided: xa***.",
                },
            )
        path = request.url.path
        if path == "/v1/models" and request.method == "GET":
            return reply(200, {"data": [{"id": "grok-imagine-image"}], "object": "list"})
        assert request.headers["content-type"].startswith("application/json"), "xAI takes JSON"
        body = json.loads(request.content)
        for unsupported in ("size", "style"):
            if unsupported in body:
                return reply(
                    400,
                    {
                        "code": "Client specified an invalid argument",
                        "error": f"Argument not supported: {unsupported}",
                    },
                )
        assert set(body) <= _XAI_FIELDS, set(body) - _XAI_FIELDS
        if self.fail is not None:
            return self._failure(request)
        assert body.get("aspect_ratio", "1:1") in XAI_RATIOS
        assert body.get("resolution", "1k") in ("1k", "2k")
        n = body.get("n", 1)
        assert 1 <= n <= 10
        if path == "/v1/images/edits":
            image = body["image"]
            assert image["type"] == "image_url" and image["url"].startswith("data:image/")
        elif path != "/v1/images/generations":
            return reply(404, {"error": "Not found"})
        if body.get("response_format", "url") == "b64_json":
            data = [
                {"b64_json": b64(JPEG), "mime_type": "image/jpeg", "revised_prompt": "r"}
                for _ in range(n)
            ]
        else:
            data = [
                {"url": f"https://imgen.x.ai/xai-imgen/xai-tmp-{i}.jpeg", "mime_type": "image/jpeg"}
                for i in range(n)
            ]
        return reply(200, {"data": data, "usage": {"cost_in_usd_ticks": 200_000_000 * n}})

    def _failure(self, request: httpx.Request) -> httpx.Response | Any:
        if self.fail == "rate_limit":
            return reply(
                429,
                {"code": "Too many requests", "error": "Rate limit exceeded"},
                headers={"Retry-After": self.retry_after},
            )
        if self.fail == "blocked":  # an input-moderation block: 200 with ``block_reason``
            return reply(
                200, {"block_reason": "Generated image rejected by content moderation.", "data": []}
            )
        if self.fail == "policy":
            return reply(
                400,
                {
                    "code": "Client specified an invalid argument",
                    "error": "Content violates usage guidelines.",
                },
            )
        if self.fail == "auth":
            return reply(401, {"code": "Unauthorized", "error": "invalid api key"})
        if self.fail == "hang":
            return hang()(request)
        raise AssertionError(f"unknown failure {self.fail}")
