"""Who may see and do what: basic auth or a user callable (401 otherwise), read-only mode
(every POST is 403), and CSRF protection of actions (a double-submit token: the `baton_csrf`
cookie must match the `X-CSRF-Token` header or the `csrf_token` form field)."""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ValidationError

CSRF_COOKIE = "baton_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

Auth = str | tuple[str, str] | Callable[[HTTPConnection], bool | Awaitable[bool]] | None


def parse_basic(value: str) -> tuple[str, str]:
    """`USER:PASS` as given to --basic-auth / BATON_DASHBOARD_AUTH."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValidationError("auth", "basic auth must be given as USER:PASS (both non-empty)")
    return user, password


def check_auth(auth: Auth) -> Auth:
    """Validate the `auth` option of create_app."""
    if auth is None or callable(auth):
        return auth
    if isinstance(auth, str):
        return parse_basic(auth)
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(a, str) and a for a in auth):
        return auth
    raise ValidationError(
        "auth", f"must be None, 'USER:PASS', a (user, password) tuple or a callable(request) -> bool, got {auth!r:.60}"
    )


def _basic_ok(header: str | None, expected: tuple[str, str]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, password = given.partition(":")
    # Both compared every time, in constant time, so timing tells nothing about either.
    ok_user = hmac.compare_digest(user.encode(), expected[0].encode())
    ok_password = hmac.compare_digest(password.encode(), expected[1].encode())
    return ok_user and ok_password


class Guard:
    """ASGI middleware: authentication first (401), then read-only mode (403 for every POST)."""

    def __init__(self, app: ASGIApp, auth: Auth, read_only: bool) -> None:
        self.app, self.auth, self.read_only = app, auth, read_only

    async def _allowed(self, scope: Scope) -> bool:
        if self.auth is None:
            return True
        conn = HTTPConnection(scope)
        if isinstance(self.auth, tuple):
            return _basic_ok(conn.headers.get("authorization"), self.auth)
        result = self.auth(conn)  # type: ignore[operator]
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._allowed(scope):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            if isinstance(self.auth, tuple):
                headers.append((b"www-authenticate", b'Basic realm="Baton dashboard", charset="UTF-8"'))
            await _plain(send, 401, b"authentication required\n", headers)
            return
        if self.read_only and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            await _plain(send, 403, b"the dashboard is read-only\n", [(b"content-type", b"text/plain; charset=utf-8")])
            return
        await self.app(scope, receive, send)


async def _plain(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def csrf_token(request: Request) -> str:
    """This browser's CSRF token (its cookie's value, or a new one the response sets)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 20:
        token = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(24))
    return token


async def csrf_ok(request: Request) -> bool:
    """Whether a POST carries the token of its own cookie (header, or form field)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie:
        return False
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and hmac.compare_digest(given.encode(), cookie.encode())


def set_csrf_cookie(request: Request, response: Any) -> None:
    """Set the CSRF cookie when this request made a new token."""
    token = request.state.__dict__.get("new_csrf")
    if token:
        path = request.scope.get("root_path") or "/"
        response.set_cookie(CSRF_COOKIE, token, path=path, httponly=True, samesite="strict")
