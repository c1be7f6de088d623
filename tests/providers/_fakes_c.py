"""Protocol-faithful fakes of Azure OpenAI, OpenRouter, xAI and Recraft (PROVIDERS-2.md §8).

Each fake is an ``httpx.Request -> httpx.Response`` callable served through
:class:`tests.providers._fakes_b.FakeServer` (``httpx.MockTransport``). It checks what
the adapter sends the way the real API would (auth, routes, allowed fields) and
answers with the documented bodies; ``fail`` picks one documented failure instead.
Shapes labelled *unconfirmed* in PROVIDERS-2.md are marked so here too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from tests.providers._fakes_b import PNG, SECRET, multipart, reply

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 32" width="64" height="32">'
    b'<script>alert(1)</script><rect width="64" height="32" fill="#f80" onclick="x()"/>'
    b'<image href="https://tracker.example/p.png"/></svg>'
)
#: how long a "hang" failure keeps the adapter waiting (well past the tests' timeout_s)
HANG_S = 5.0


def real_png(width: int = 8, height: int = 8) -> bytes:
    """A decodable PNG, for tests that go through the pipeline."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 0)).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bearer(request: httpx.Request) -> str | None:
    raw = request.headers.get("authorization", "")
    return raw.removeprefix("Bearer ") if raw.startswith("Bearer ") else None


async def _hang() -> httpx.Response:
    await asyncio.sleep(HANG_S)
    return reply(200, {})


# -- Azure OpenAI (§1) ---------------------------------------------------------------

AZURE_CONTENT_FILTER = {
    "created": 1698435368,
    "error": {
        "code": "contentFilter",
        "message": "Your task failed as a result of our safety system.",
    },
}
AZURE_POLICY = {
    "error": {
        "code": "content_policy_violation",
        "inner_error": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_results": {"jailbreak": {"detected": False, "filtered": False}},
        },
        "message": "Your request was rejected as a result of our safety system.",
        "type": "invalid_request_error",
    }
}
_FILTERS = {
    c: {"severity": "safe", "filtered": False} for c in ("hate", "sexual", "violence", "self_harm")
}
_AZURE_FIELDS = {
    "prompt", "model", "n", "size", "quality", "style", "response_format", "output_format",
    "output_compression", "background", "stream", "partial_images", "user",
}  # fmt: skip


@dataclass
class AzureFake:
    """An Azure OpenAI resource with ``deployments`` (deployment name -> model)."""

    deployments: dict[str, str] = field(default_factory=lambda: {"img1": "gpt-image-1"})
    key: str = SECRET
    token: str | None = None
    fail: str | None = None
    retry_after: str = "7"

    def __call__(self, request: httpx.Request) -> httpx.Response | Any:
        if request.headers.get("api-key") != self.key and (
            self.token is None or bearer(request) != self.token
        ):
            return reply(
                401,
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key.",
                    }
                },
            )
        path = request.url.path
        version = request.url.params.get("api-version")
        if path.endswith("/models"):
            return reply(200, {"data": [{"id": m} for m in self.deployments.values()]})
        if path.startswith("/openai/v1/images/"):
            endpoint = path.removeprefix("/openai/v1/images/")
            deployment = self._form(request).get("model")
        elif path.startswith("/openai/deployments/"):
            if not version:  # the deployments route needs an api-version
                return reply(404, {"error": {"code": "404", "message": "Resource not found"}})
            deployment, _, rest = path.removeprefix("/openai/deployments/").partition("/")
            endpoint = rest.removeprefix("images/")
        else:
            return reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        model = self.deployments.get(str(deployment))
        if model is None or endpoint not in ("generations", "edits"):
            return reply(
                404,
                {
                    "error": {
                        "code": "DeploymentNotFound",
                        "message": "The API deployment for this resource does not exist.",
                    }
                },
            )
        if self.fail is not None:
            return self._failure()
        form = self._form(request)
        assert set(form) <= _AZURE_FIELDS, set(form) - _AZURE_FIELDS
        assert form.get("output_format", "png") in ("png", "jpeg"), "Azure has no WebP"
        if endpoint == "edits":
            assert model.startswith("gpt-image"), "DALL·E cannot use the edit route"
            parts = multipart(request)
            assert "image" in parts or "image[]" in parts
        n = int(form.get("n", 1))
        if model == "dall-e-3":
            assert n == 1
            if form.get("response_format", "url") == "b64_json":
                return reply(
                    200,
                    {
                        "created": 1698342300,
                        "data": [{"b64_json": b64(PNG), "content_filter_results": _FILTERS}],
                    },
                )
            data = [{
                "url": "https://dalletipusw2.blob.core.windows.net/private/images/u/generated_00.png?se=2026-10-27T17%3A45%3A09Z&sig=x",
                "revised_prompt": "a revised prompt",
                "prompt_filter_results": _FILTERS,
                "content_filter_results": _FILTERS,
            }]  # fmt: skip
            return reply(200, {"created": 1698342300, "data": data})
        data = [{"b64_json": b64(PNG), "content_filter_results": _FILTERS} for _ in range(n)]
        usage = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210}
        return reply(200, {"created": 1698116662, "data": data, "usage": usage})

    def _form(self, request: httpx.Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("multipart/"):
            return {
                k: v[1].decode()
                for k, v in multipart(request).items()
                if not k.startswith(("image", "mask"))
            }
        body = json.loads(request.content or b"{}")
        assert isinstance(body, dict)
        return body

    def _failure(self) -> httpx.Response | Any:
        if self.fail == "rate_limit":
            message = (
                "Requests to the Images_Generations Operation under Azure OpenAI API version "
                "2025-04-01-preview have exceeded call rate limit. Please retry after 7 seconds."
            )
            return reply(
                429,
                {"error": {"code": "429", "message": message}},
                headers={"Retry-After": self.retry_after},
            )
        if self.fail == "content_filter":
            return reply(400, AZURE_CONTENT_FILTER)
        if self.fail == "policy":
            return reply(400, AZURE_POLICY)
        if self.fail == "hang":
            return _hang()
        raise AssertionError(f"unknown failure {self.fail}")


# -- OpenRouter (§6) -----------------------------------------------------------------


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
            return self._failure()
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

    def _failure(self) -> httpx.Response | Any:
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
            return _hang()
        raise AssertionError(f"unknown failure {self.fail}")


# -- xAI (§7) ------------------------------------------------------------------------

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
            return self._failure()
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

    def _failure(self) -> httpx.Response | Any:
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
            return _hang()
        raise AssertionError(f"unknown failure {self.fail}")


# -- Recraft (§5) --------------------------------------------------------------------

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
            return self._failure()
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

    def _failure(self) -> httpx.Response | Any:
        if self.fail == "rate_limit":  # status and header unconfirmed for Recraft
            return httpx.Response(
                429, text="too many requests", headers={"Retry-After": self.retry_after}
            )
        if self.fail == "nsfw":  # wording unconfirmed; plain text like every Recraft error
            return httpx.Response(400, text="nsfw content detected in prompt")
        if self.fail == "hang":
            return _hang()
        raise AssertionError(f"unknown failure {self.fail}")


def loopback_routes(fake: Any, paths: list[str]) -> dict[str, Any]:
    """``LoopbackServer`` routes (tests/fakes.py) that answer ``paths`` with ``fake``, for
    tests that go through the app's real HTTP client on 127.0.0.1."""

    def route(received: Any) -> tuple[int, dict[str, str], bytes]:
        request = httpx.Request(
            received.method,
            "http://127.0.0.1" + received.path,
            headers=received.headers,
            content=received.body,
        )
        response = fake(request)
        assert isinstance(response, httpx.Response), "async failures need the MockTransport"
        headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        headers["Content-Type"] = response.headers.get("content-type", "text/plain")
        return response.status_code, headers, response.content

    return {path: route for path in paths}
