"""Fakes of Google's OAuth token endpoint and of Vertex AI (PROVIDERS-2.md §2, §8).

* :class:`FakeTokenServer` is Google's OAuth token endpoint on loopback (google-auth
  talks to it with ``requests``): it verifies the service account's signed JWT
  assertion and issues access tokens with a chosen lifetime.
* :class:`FakeVertex` is a Vertex endpoint (a :class:`~tests.providers.kit.FakeServer`)
  that accepts only tokens the token server issued and that have not expired.
"""

from __future__ import annotations

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
from tests.providers.kit import PNG, FakeServer, b64, json_reply, reply

PROJECT = "pixel-proj"
CLIENT_EMAIL = "pixelgate@pixel-proj.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"
FakeHandler = Callable[[httpx.Request, dict[str, Any]], httpx.Response | None]


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
            return json_reply(
                400, {"error": self.reject, "error_description": "Invalid JWT Signature."}
            )
        self.grants += 1
        token = f"ya29.fake-{self.grants}"
        self.issued[token] = time.time() + self.expires_in
        grant = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return json_reply(200, grant)

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
    return reply(status, {"error": {"code": status, "message": message, "status": code}})


class FakeVertex(FakeServer):
    """Vertex ``:predict`` / ``:generateContent``; ``answer`` may replace the default reply."""

    def __init__(self, tokens: FakeTokenServer, answer: FakeHandler | None = None) -> None:
        super().__init__(self._serve)
        self.tokens = tokens
        self.answer = answer
        self.bearers: list[str] = []

    def _serve(self, request: httpx.Request) -> httpx.Response:
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
            return reply(200, {"name": request.url.path.removeprefix("/v1/")})
        match = _VERTEX_PATH.match(request.url.path)
        assert match, request.url.path
        assert match["project"] == PROJECT
        body = json.loads(request.content)
        info = {**match.groupdict(), "body": body}
        if self.answer is not None:
            answered = self.answer(request, info)
            if answered is not None:
                return answered
        if match["method"] == "predict":
            count = body["parameters"]["sampleCount"]
            return reply(200, imagen_predictions(count))
        return reply(200, gemini_image(match["model"]))


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
