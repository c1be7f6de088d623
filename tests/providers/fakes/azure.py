"""A fake Azure OpenAI resource (PROVIDERS-2.md §1): both routes, deployments, filters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.providers.kit import PNG, SECRET, b64, bearer, hang, multipart, reply

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
            return self._failure(request)
        form = self._form(request)
        assert set(form) <= _AZURE_FIELDS, set(form) - _AZURE_FIELDS
        assert form.get("output_format", "png") in ("png", "jpeg"), "Azure has no WebP"
        if endpoint == "edits":
            assert model.startswith("gpt-image"), "DALL·E cannot use the edit route"
            names = multipart(request).names()
            assert "image" in names or "image[]" in names
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
                p.name: p.data.decode()
                for p in multipart(request).parts
                if not p.name.startswith(("image", "mask"))
            }
        body = json.loads(request.content or b"{}")
        assert isinstance(body, dict)
        return body

    def _failure(self, request: httpx.Request) -> httpx.Response | Any:
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
            return hang()(request)
        raise AssertionError(f"unknown failure {self.fail}")
