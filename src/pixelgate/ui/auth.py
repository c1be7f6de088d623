"""Who is signed in to the UI, and the CSRF check of every state-changing request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pixelgate.api.deps import caller_for_hash
from pixelgate.core.pipeline import Caller
from pixelgate.errors import AuthenticationFailed, Forbidden
from pixelgate.runtime import Runtime
from pixelgate.ui.render import LoginRequired
from pixelgate.ui.session import CSRF_FIELD, CSRF_HEADER, UISession, csrf_matches, read_session

__all__ = ["AdminUser", "CsrfFailed", "UIUser", "User", "require_csrf"]


class CsrfFailed(Forbidden):
    code = "csrf_failed"


@dataclass(frozen=True)
class UIUser:
    """The signed-in caller (resolved like an API key, so revocation applies) and the session."""

    caller: Caller
    session: UISession

    @property
    def csrf(self) -> str:
        return self.session.csrf


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def current_user(request: Request) -> UIUser:
    session = read_session(request, _runtime(request).settings)
    if session is None or session.key_hash is None:
        raise LoginRequired
    try:
        caller = await caller_for_hash(request, session.key_hash)
    except AuthenticationFailed:
        raise LoginRequired from None
    return UIUser(caller, session)


async def current_admin(user: Annotated[UIUser, Depends(current_user)]) -> UIUser:
    if not user.caller.is_admin:
        raise Forbidden("this page needs an admin key")
    return user


async def require_csrf(request: Request, session: UISession | None) -> None:
    """Refuse (403 ``csrf_failed``) a state-changing request without the session's token.

    The token comes from the ``X-CSRF-Token`` header (the UI's scripts) or the form field.
    """
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not csrf_matches(session, token):
        raise CsrfFailed("missing or wrong CSRF token: reload the page and try again")


async def csrf_user(request: Request, user: Annotated[UIUser, Depends(current_user)]) -> UIUser:
    await require_csrf(request, user.session)
    return user


async def csrf_admin(request: Request, user: Annotated[UIUser, Depends(current_admin)]) -> UIUser:
    await require_csrf(request, user.session)
    return user


User = Annotated[UIUser, Depends(current_user)]
AdminUser = Annotated[UIUser, Depends(current_admin)]
#: a signed-in user whose request carries the CSRF token (every POST of the UI)
PostingUser = Annotated[UIUser, Depends(csrf_user)]
PostingAdmin = Annotated[UIUser, Depends(csrf_admin)]
