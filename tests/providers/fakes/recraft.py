"""A fake Recraft (PROVIDERS-2.md §5): vector models answer SVG, errors are plain text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.providers.kit import PNG, SECRET, b64, bearer, hang, reply

SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 32" width="64" height="32">'
    b'<script>alert(1)</script><rect width="64" height="32" fill="#f80" onclick="x()"/>'
    b'<image href="https://tracker.example/p.png"/></svg>'
)
RECRAFT_VECTOR_STYLES = {"any", "vector_illustration", "icon"}
_RECRAFT_FIELDS = {
    "prompt", "model", "style", "substyle", "style_id", "n", "size", "negative_prompt",
    "random_seed", "response_format", "image_format", "controls", "text_layout",
    "creativity", "style_match", "upscale", "expire", "block_nsfw",
}  # fmt: skip


@dataclass
class RecraftFake:
    """``/v1/images/generations``; vector models answer SVG; errors are plain text."""

    key: str = SECRET
    fail: str | None = None
    retry_after: str = "5"
    credits: int = 40
    #: what raster models answer (the default is not decodable: adapter tests only)
    raster: bytes = PNG

    def __call__(self, request: httpx.Request) -> httpx.Response | Any:
        if bearer(request) != self.key:
            return httpx.Response(401, text="request unauthorized")
        path = request.url.path
        if path == "/v1/users/me" and request.method == "GET":
            return reply(200, {"id": "u1", "email": "a@b.c", "name": "A", "credits": 1000})
        if path != "/v1/images/generations":
            return httpx.Response(404, text="404 page not found")
        if self.fail is not None:
            return self._failure(request)
        body = json.loads(request.content)
        assert set(body) <= _RECRAFT_FIELDS, set(body) - _RECRAFT_FIELDS
        model = body.get("model", "recraftv3")
        vector = model.endswith("_vector") or body.get("style") == "vector_illustration"
        if vector and model.endswith("_vector"):
            assert body.get("style", "any") in RECRAFT_VECTOR_STYLES
        if "x" not in body.get("size", "1024x1024") and ":" not in body["size"]:
            return httpx.Response(400, text="invalid size")
        image = SVG if vector else self.raster
        n = body.get("n", 1)
        if body.get("response_format", "url") == "b64_json":
            data = [{"image_id": f"img-{i}", "b64_json": b64(image)} for i in range(n)]
        else:
            ext = "svg" if vector else "png"
            data = [
                {"image_id": f"img-{i}", "url": f"https://img.recraft.ai/x/{i}.{ext}"}
                for i in range(n)
            ]
        units = self.credits * (2 if vector else 1) * n
        return reply(200, {"created": 1748140800, "credits": units, "data": data})

    def _failure(self, request: httpx.Request) -> httpx.Response | Any:
        if self.fail == "rate_limit":  # status and header unconfirmed for Recraft
            return httpx.Response(
                429, text="too many requests", headers={"Retry-After": self.retry_after}
            )
        if self.fail == "nsfw":  # wording unconfirmed; plain text like every Recraft error
            return httpx.Response(400, text="nsfw content detected in prompt")
        if self.fail == "hang":
            return hang()(request)
        raise AssertionError(f"unknown failure {self.fail}")
