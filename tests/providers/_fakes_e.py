"""Fakes for the Vertex AI and Bedrock adapter tests (PROVIDERS-2.md §2, §3, §8).

* :class:`FakeTokenServer` is Google's OAuth token endpoint on loopback (google-auth
  talks to it with ``requests``): it verifies the service account's signed JWT
  assertion and issues access tokens with a chosen lifetime.
* :class:`FakeVertex` is a Vertex endpoint (``httpx.MockTransport``) that accepts only
  tokens the token server issued and that have not expired.
* :class:`FakeBedrock` is a Bedrock runtime endpoint that recomputes each request's
  SigV4 signature with botocore (service ``bedrock``), or checks a bearer API key.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes import LoopbackServer, Received, Reply

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(48))
PROJECT = "pixel-proj"
CLIENT_EMAIL = "pixelgate@pixel-proj.iam.gserviceaccount.com"
ACCESS_KEY = "AKIAFAKEPIXELGATE01"
SECRET_KEY = "fake/secret/key/0123456789abcdefghijklmn"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE-session"
BEDROCK_API_KEY = "ABSKfakebedrockapikey0123456789"
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"
FakeHandler = Callable[[httpx.Request, dict[str, Any]], httpx.Response | None]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- Google OAuth --------------------------------------------------------------------


@dataclass
class FakeTokenServer:
    """``POST /token``: a JWT-bearer grant signed with the test's key → an access token."""

    public_pem: bytes
    expires_in: int = 3600
    reject: str | None = None
    issued: dict[str, float] = field(default_factory=dict)
    grants: int = 0
    server: LoopbackServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = LoopbackServer({"/token": self._token})

    @property
    def token_uri(self) -> str:
        return self.server.url("/token")

    def valid(self, token: str) -> bool:
        expiry = self.issued.get(token)
        return expiry is not None and time.time() < expiry

    def expire_all(self) -> None:
        """Revoke every token issued so far (the next call with one gets a 401)."""
        for token in self.issued:
            self.issued[token] = 0.0

    def _token(self, received: Received) -> Reply:
        from google.auth import jwt

        form = urllib.parse.parse_qs(received.body.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        # google-auth always names Google's endpoint as the audience; it *posts* to token_uri
        claims = jwt.decode(form["assertion"][0], certs=self.public_pem, audience=GOOGLE_TOKEN_AUD)
        assert claims["iss"] == CLIENT_EMAIL
        assert "https://www.googleapis.com/auth/cloud-platform" in claims["scope"].split()
        if self.reject:
            body = {"error": self.reject, "error_description": "Invalid JWT Signature."}
            return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()
        self.grants += 1
        token = f"ya29.fake-{self.grants}"
        self.issued[token] = time.time() + self.expires_in
        body = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def __enter__(self) -> FakeTokenServer:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)


def service_account(tmp_path: Path, token_uri: str) -> tuple[Path, bytes]:
    """A throwaway RSA key as a service-account JSON file; returns it and the public PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    return path, public_pem


# --- Vertex --------------------------------------------------------------------------

_VERTEX_PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>predict|generateContent)$"
)


def google_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": status, "message": message, "status": code}}
    )


@dataclass
class FakeVertex:
    """Vertex ``:predict`` / ``:generateContent``; ``answer`` may replace the default reply."""

    tokens: FakeTokenServer
    answer: FakeHandler | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    bearers: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        auth = request.headers.get("authorization", "")
        assert "x-goog-api-key" not in request.headers
        token = auth.removeprefix("Bearer ")
        self.bearers.append(token)
        if not auth.startswith("Bearer ") or not self.tokens.valid(token):
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        if request.method == "GET":
            assert re.match(r"^/v1/publishers/google/models/[^/]+$", request.url.path)
            return httpx.Response(200, json={"name": request.url.path.removeprefix("/v1/")})
        match = _VERTEX_PATH.match(request.url.path)
        assert match, request.url.path
        assert match["project"] == PROJECT
        body = json.loads(request.content)
        info = {**match.groupdict(), "body": body}
        if self.answer is not None:
            reply = self.answer(request, info)
            if reply is not None:
                return reply
        if match["method"] == "predict":
            count = body["parameters"]["sampleCount"]
            return httpx.Response(200, json=imagen_predictions(count))
        return httpx.Response(200, json=gemini_image(match["model"]))


def imagen_predictions(count: int, filtered: int = 0) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"bytesBase64Encoded": b64(PNG), "mimeType": "image/png"} for _ in range(count - filtered)
    ]
    return {"predictions": items}


def gemini_image(model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here it is."},
                        {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "modelVersion": model,
    }


# --- Bedrock -------------------------------------------------------------------------

_CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def bedrock_error(
    status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Bedrock's rest-json error: ``x-amzn-ErrorType`` plus a ``{"message"}`` body."""
    return httpx.Response(
        status,
        json={"message": message},
        headers={
            "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "5c3a1f1e-0000-4000-8000-000000000000",
            **(headers or {}),
        },
    )


@dataclass
class FakeBedrock:
    """``POST /model/{modelId}/invoke`` (and the control plane's GetFoundationModel)."""

    region: str = "us-east-1"
    secret_key: str = SECRET_KEY
    answer: FakeHandler | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    auth_seen: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            match = re.match(r"^/foundation-models/([^/]+)$", request.url.path)
            assert match, request.url.path
            model = urllib.parse.unquote(match[1])
            details = {"modelId": model, "modelLifecycle": {"status": "ACTIVE"}}
            return httpx.Response(200, json={"modelDetails": details})
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
            reply = self.answer(request, info)
            if reply is not None:
                return reply
        if model.startswith("stability."):
            return httpx.Response(
                200, json={"seeds": [7], "finish_reasons": [None], "images": [b64(PNG)]}
            )
        count = body.get("imageGenerationConfig", {}).get("numberOfImages", 1)
        return httpx.Response(200, json={"images": [b64(PNG)] * count})

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


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))
