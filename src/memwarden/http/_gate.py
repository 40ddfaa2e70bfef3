"""What every request passes before a route sees it: the token, the body size, the POST rate.

A pure ASGI middleware, so a refusal is sent with the shared error envelope
before any route runs and before the body is read:

- a query string that carries a token (``token``, ``access_token``) is refused
  with 400, so a token is never accepted from a URL (URLs end up in logs);
- without a valid ``Authorization: Bearer <token>`` every route but the
  public ones answers 401 with ``WWW-Authenticate: Bearer``; tokens are
  compared with :func:`hmac.compare_digest`;
- a ``Content-Length`` over the limit answers 413 at once, and a body sent
  without one (chunked) is counted as it arrives: the read that crosses the
  limit raises :class:`ApiError` (413), which the app renders;
- POST routes named in ``limited`` are rate-limited by a token bucket per
  route: 429 with ``Retry-After`` (whole seconds, at least 1).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from .._envelope import retry_after_header, send_error
from ..asgi import _relative_path

__all__: list[str] = []

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Query parameters that would put a credential in a URL.
_TOKEN_PARAMETERS = frozenset({"token", "access_token", "api_token", "bearer"})


class ApiError(Exception):
    """An error answered with the JSON error envelope: ``status``, ``kind`` and ``message``."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class TokenBucket:
    """``burst`` calls at once, then one more every ``interval`` seconds (by ``clock``).

    :meth:`take` returns 0.0 and spends a call when one is left, else the
    seconds until the next one. Thread-safe.
    """

    def __init__(self, burst: int, interval: float, clock: Callable[[], float]) -> None:
        self._burst = float(burst)
        self._interval = interval
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend one call and return 0.0, or return how long until one is available."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._stamp)
            self._stamp = now
            self._tokens = min(self._burst, self._tokens + elapsed / self._interval)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) * self._interval


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class Gate:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        public: Callable[[str], bool],
        max_body: int,
        limited: Collection[str],
        burst: int,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.app = app
        self._expected = None if token is None else f"Bearer {token}".encode()
        self._public = public
        self._max_body = max_body
        self._buckets = {path: TokenBucket(burst, interval, clock) for path in limited}

    def _authorized(self, scope: Scope) -> bool | None:
        """True for a valid token, False for a wrong one, None when none was sent."""
        assert self._expected is not None
        given = _header(scope, b"authorization")
        if given is None:
            return None
        scheme, _, credential = given.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        # Always compared, and compared in constant time, whatever was sent.
        return hmac.compare_digest(b"Bearer " + credential.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check one request and pass it on, or answer it with an error."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        for name, _ in parse_qsl(query, keep_blank_values=True):
            if name.lower() in _TOKEN_PARAMETERS:
                await send_error(
                    send,
                    400,
                    "bad_parameter",
                    f"query parameter {name!r} refused: a token never travels in a URL; "
                    "send it as 'Authorization: Bearer <token>'",
                )
                return
        path = _relative_path(scope)
        if self._expected is not None and not self._public(path):
            verdict = self._authorized(scope)
            if not verdict:
                challenge = 'Bearer realm="memwarden"'
                if verdict is False:
                    challenge += ', error="invalid_token"'
                    message = "the bearer token is not valid"
                else:
                    message = "this route needs 'Authorization: Bearer <token>'"
                await send_error(
                    send, 401, "unauthorized", message, headers=[("WWW-Authenticate", challenge)]
                )
                return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_error(send, 400, "bad_request", "Content-Length is not a number")
                return
            if declared > self._max_body:
                await send_error(send, 413, "payload_too_large", self._too_large())
                return
        if scope.get("method") == "POST":
            bucket = self._buckets.get(path)
            if bucket is not None:
                wait = bucket.take()
                if wait > 0.0:
                    await send_error(
                        send,
                        429,
                        "rate_limited",
                        f"POST {path} is rate-limited: try again in {wait:.1f} s",
                        headers=[("Retry-After", retry_after_header(wait))],
                    )
                    return
        await self.app(scope, self._counting(receive), send)

    def _too_large(self) -> str:
        return f"request bodies are limited to {self._max_body} bytes"

    def _counting(self, receive: Receive) -> Receive:
        limit = self._max_body
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, "payload_too_large", self._too_large())
            return message

        return counted
