"""A fake OpenRouter (PROVIDERS-2.md §6): chat with ``modalities`` and ``POST /images``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.providers.kit import PNG, SECRET, b64, bearer, hang, reply


@dataclass
class OpenRouterFake:
    """Chat completions with ``modalities`` (images as data URLs) and ``POST /images``."""

    key: str = SECRET
    fail: str | None = None
    #: models that answer with text only (no ``images`` in the message)
    text_only: set[str] = field(default_factory=set)
    retry_after: str = "3"

    def __call__(self, request: httpx.Request) -> httpx.Response | Any:
        if bearer(request) != self.key:
            return reply(401, {"error": {"code": 401, "message": "Missing Authentication header"}})
        path = request.url.path
        if path == "/api/v1/key" and request.method == "GET":
            return reply(
                200,
                {
                    "data": {
                        "label": "sk-or-v1-abc...xyz",
                        "limit": None,
                        "usage": 1.5,
                        "is_free_tier": False,
                    }
                },
            )
        if self.fail is not None:
            return self._failure(request)
        body = json.loads(request.content)
        if path == "/api/v1/chat/completions":
            return self._chat(body)
        if path == "/api/v1/images":
            return self._images(body)
        return reply(404, {"error": {"code": 404, "message": "Not Found"}})

    def _chat(self, body: dict[str, Any]) -> httpx.Response:
        assert set(body) <= {"model", "messages", "modalities", "image_config", "stream", "seed"}
        assert "image" in body["modalities"] and set(body["modalities"]) <= {"image", "text"}
        content = body["messages"][0]["content"]
        assert isinstance(content, str | list)
        message: dict[str, Any] = {"role": "assistant", "content": "Here you go."}
        if body["model"] in self.text_only:
            message["content"] = "I can't help with that request."
        else:
            url = "data:image/png;base64," + b64(PNG)
            message["images"] = [{"type": "image_url", "image_url": {"url": url}}]
        choice = {"index": 0, "finish_reason": "stop", "message": message}
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": 1300,
            "total_tokens": 1310,
            "cost": 0.039,
        }
        return reply(
            200, {"id": "gen-123", "model": body["model"], "choices": [choice], "usage": usage}
        )

    def _images(self, body: dict[str, Any]) -> httpx.Response:
        allowed = {
            "model", "prompt", "n", "resolution", "aspect_ratio", "size", "quality",
            "output_format", "input_references", "provider", "background",
            "output_compression", "seed", "stream",
        }  # fmt: skip
        assert set(body) <= allowed, set(body) - allowed
        n = body.get("n", 1)
        assert 1 <= n <= 10
        assert body.get("output_format", "png") in ("png", "jpeg", "webp", "svg")
        data = [{"b64_json": b64(PNG), "media_type": "image/png"} for _ in range(n)]
        usage = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10, "cost": 0.05 * n}
        return reply(200, {"created": 1750000000, "data": data, "usage": usage})

    def _failure(self, request: httpx.Request) -> httpx.Response | Any:
        if self.fail == "rate_limit":
            return reply(
                429,
                {"error": {"code": 429, "message": "Rate limit exceeded"}},
                headers={"Retry-After": self.retry_after},
            )
        if self.fail == "no_credits":
            return reply(
                402,
                {
                    "error": {
                        "code": 402,
                        "message": "Insufficient credits. Add more using https://openrouter.ai/credits",
                    }
                },
            )
        if self.fail == "moderation":
            metadata = {
                "reasons": ["sexual"],
                "flagged_input": "a naughty...",
                "provider_name": "Google",
                "model_slug": "google/gemini-2.5-flash-image",
            }
            return reply(
                403, {"error": {"code": 403, "message": "Input was flagged", "metadata": metadata}}
            )
        if self.fail == "no_route":
            return reply(
                503,
                {"error": {"code": 503, "message": "No available provider"}},
                headers={"Retry-After": self.retry_after},
            )
        if self.fail == "hang":
            return hang()(request)
        raise AssertionError(f"unknown failure {self.fail}")
