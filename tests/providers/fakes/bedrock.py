"""A fake Bedrock runtime (PROVIDERS-2.md §3, §8): it recomputes each request's SigV4
signature with botocore (service ``bedrock``), or checks a bearer API key."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from tests.providers.kit import PNG, FakeServer, b64, reply

ACCESS_KEY = "AKIAFAKEPIXELGATE01"
SECRET_KEY = "fake/secret/key/0123456789abcdefghijklmn"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE-session"
BEDROCK_API_KEY = "ABSKfakebedrockapikey0123456789"
FakeHandler = Callable[[httpx.Request, dict[str, Any]], httpx.Response | None]


_CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def bedrock_error(
    status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Bedrock's rest-json error: ``x-amzn-ErrorType`` plus a ``{"message"}`` body."""
    return reply(
        status,
        {"message": message},
        headers={
            "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "5c3a1f1e-0000-4000-8000-000000000000",
            **(headers or {}),
        },
    )


class FakeBedrock(FakeServer):
    """``POST /model/{modelId}/invoke`` (and the control plane's GetFoundationModel)."""

    def __init__(
        self,
        region: str = "us-east-1",
        secret_key: str = SECRET_KEY,
        answer: FakeHandler | None = None,
    ) -> None:
        super().__init__(self._serve)
        self.region = region
        self.secret_key = secret_key
        self.answer = answer
        self.auth_seen: list[str] = []

    def _serve(self, request: httpx.Request) -> httpx.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            match = re.match(r"^/foundation-models/([^/]+)$", request.url.path)
            assert match, request.url.path
            model = urllib.parse.unquote(match[1])
            details = {"modelId": model, "modelLifecycle": {"status": "ACTIVE"}}
            return reply(200, {"modelDetails": details})
        raw_path = request.url.raw_path.decode()
        match = re.match(r"^/model/([^/]+)/invoke$", raw_path)
        assert match, raw_path
        assert request.headers["content-type"] == "application/json"
        assert request.headers["accept"] == "application/json"
        model = urllib.parse.unquote(match[1])
        assert ":" not in match[1], "the model id must be URL-encoded"
        body = json.loads(request.content)
        info = {"model": model, "body": body}
        if self.answer is not None:
            answered = self.answer(request, info)
            if answered is not None:
                return answered
        if model.startswith("stability."):
            return reply(200, {"seeds": [7], "finish_reasons": [None], "images": [b64(PNG)]})
        count = body.get("imageGenerationConfig", {}).get("numberOfImages", 1)
        return reply(200, {"images": [b64(PNG)] * count})

    def _check_auth(self, request: httpx.Request) -> httpx.Response | None:
        auth = request.headers.get("authorization", "")
        self.auth_seen.append(auth)
        if auth.startswith("Bearer "):
            if auth.removeprefix("Bearer ") != BEDROCK_API_KEY:
                return bedrock_error(403, "AccessDeniedException", "Invalid API Key format")
            return None
        match = _CREDENTIAL.match(auth)
        assert match, f"not a SigV4 Authorization header: {auth!r}"
        assert match["service"] == "bedrock"
        assert match["region"] == self.region
        amz_date = request.headers["x-amz-date"]
        assert amz_date.startswith(match["date"])
        signed = match["signed"].split(";")
        assert {"host", "x-amz-date", "content-type"} <= set(signed), signed
        if match["key"] != ACCESS_KEY:
            return bedrock_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        expected = self._signature(request, signed, amz_date, match["region"])
        if expected != match["signature"]:
            return bedrock_error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        return None

    def _signature(
        self, request: httpx.Request, signed: list[str], amz_date: str, region: str
    ) -> str:
        """Recompute the signature from what arrived, with botocore's own SigV4 code."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        token = request.headers.get("x-amz-security-token")
        url = f"{request.url.scheme}://{request.url.netloc.decode()}{request.url.raw_path.decode()}"
        headers = {name: request.headers[name] for name in signed}
        aws = AWSRequest(method=request.method, url=url, data=request.content, headers=headers)
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(ACCESS_KEY, self.secret_key, token), "bedrock", region)
        canonical = signer.canonical_request(aws)
        return str(signer.signature(signer.string_to_sign(aws, canonical), aws))
