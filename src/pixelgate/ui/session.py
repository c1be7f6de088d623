"""The web UI's session: a signed cookie holding the key's hash and a CSRF token.

The API key itself is never stored: the cookie carries its SHA-256 (what the database
keeps), signed with a secret derived from the deployment secret, so every process of a
deployment accepts it and a revoked key ends its sessions. The cookie is ``HttpOnly``,
``SameSite=Strict`` and ``Secure`` when the request came over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.responses import Response

from pixelgate.config import Settings
from pixelgate.core.webhooks import deployment_secret

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_MAX_AGE_S",
    "UISession",
    "clear_session",
    "csrf_matches",
    "new_session",
    "read_session",
    "session_key_hash",
    "write_session",
]

COOKIE_NAME = "pixelgate_ui"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE_S = 12 * 3600
_SALT = "pixelgate.ui.session"


@dataclass(frozen=True)
class UISession:
    """What the cookie says: the signed-in key's hash (None before login) and the CSRF token."""

    csrf: str
    key_hash: str | None = None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    secret = hmac.new(deployment_secret(settings), b"ui-session", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt=_SALT)


def new_session(key_hash: str | None = None) -> UISession:
    """A fresh session with a new CSRF token (a login rotates it)."""
    return UISession(csrf=secrets.token_urlsafe(32), key_hash=key_hash)


def read_session(conn: HTTPConnection, settings: Settings) -> UISession | None:
    """The request's session, or None when the cookie is missing, forged or expired."""
    raw = conn.cookies.get(COOKIE_NAME)
    if not raw:
        return None
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    key_hash = data.get("k")
    return UISession(csrf=data["c"], key_hash=key_hash if isinstance(key_hash, str) else None)


def session_key_hash(conn: HTTPConnection, settings: Settings) -> str | None:
    """The signed-in key's hash from the UI cookie (the API's cookie path for safe reads)."""
    session = read_session(conn, settings)
    return session.key_hash if session else None


def write_session(
    response: Response, conn: HTTPConnection, settings: Settings, session: UISession
) -> None:
    """Set the cookie: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS."""
    value = _serializer(settings).dumps({"c": session.csrf, "k": session.key_hash})
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=conn.url.scheme == "https",
    )


def clear_session(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=conn.url.scheme == "https"
    )


def csrf_matches(session: UISession | None, token: str | None) -> bool:
    """True when ``token`` (form field or header) is the session's CSRF token."""
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf.encode(), token.encode())
