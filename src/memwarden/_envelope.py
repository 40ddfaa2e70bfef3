"""The JSON envelope of every HTTP answer memwarden writes, and a bare ASGI error response.

Success: ``{"status": "success", "data": {...}}``. Error: ``{"status": "error",
"error": {"type": ..., "message": ...}}``. The ASGI middleware and the HTTP API
answer with the same shapes, so a client handles one format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["error_body", "retry_after_header", "send_error", "success_body"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def success_body(data: object) -> bytes:
    """The success envelope around ``data``, as UTF-8 JSON."""
    return json.dumps({"status": "success", "data": data}, separators=(",", ":")).encode()


def error_body(kind: str, message: str) -> bytes:
    """The error envelope for an error of type ``kind``, as UTF-8 JSON."""
    return json.dumps(
        {"status": "error", "error": {"type": kind, "message": message}}, separators=(",", ":")
    ).encode()


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` as RFC 9110 wants it: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


async def send_error(
    send: Send,
    status: int,
    kind: str,
    message: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a complete JSON error response through a raw ASGI ``send``."""
    body = error_body(kind, message)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
