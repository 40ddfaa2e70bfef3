"""The dashboard page at ``/`` and its assets under ``/static/``.

The page, its stylesheet and its script ship inside the package
(``memwarden/http/static``) and are read with :mod:`importlib.resources`, so the
dashboard works from a wheel or a zip and loads nothing from another host. The
Content-Security-Policy sent with every answer holds the browser to that.

Every URL the page uses is relative, so it works when the app is mounted under a
prefix. Assets are public (a browser cannot send a bearer token with a
``<script src>``); the page asks for the token itself and sends it with
``fetch``. The page carries no memory figures, only the pressure thresholds and
the shedding level of the app's Warden (``app.state.warden``), so its chart is
shaded where that Warden acts.
"""

from __future__ import annotations

import html
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["dashboard_routes"]

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

# Only the package's own files: no inline script, no other host.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static_root() -> Traversable:
    return resources.files(__package__ or "memwarden.http").joinpath("static")


def _asset(path: str) -> Traversable | None:
    """The packaged file at ``path`` under static/, or None; never leaves that folder."""
    parts = path.split("/")
    if not path or any(
        part in ("", ".", "..") or part.startswith(".") or "\\" in part or "\x00" in part
        for part in parts
    ):
        return None
    node = _static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    return node


def _not_found(what: str) -> Response:
    return JSONResponse(
        {"status": "error", "error": {"type": "not_found", "message": f"no such file: {what}"}},
        status_code=404,
    )


_SETTINGS_TAG = b'<meta name="memwarden-settings" content="">'


def _settings(request: Request) -> str:
    """``medium high critical hysteresis shed_level`` of the app's Warden, or ``""``."""
    warden: Any = getattr(request.app.state, "warden", None)
    try:
        t = warden.monitor.thresholds
        values = (t.medium, t.high, t.critical, t.hysteresis)
        return " ".join(f"{float(v):.6g}" for v in values) + f" {warden.shed_level.label}"
    except AttributeError:
        return ""


def _file_response(
    node: Traversable, name: str, request: Request, body: bytes | None = None
) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    media_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")
    if body is None:
        body = node.read_bytes()
    return Response(
        b"" if request.method == "HEAD" else body,
        media_type=media_type,
        headers={**_HEADERS, "Content-Length": str(len(body))},
    )


async def _page(request: Request) -> Response:
    node = _asset("index.html")
    if node is None:  # pragma: no cover - the page ships with the package
        return _not_found("index.html")
    settings = html.escape(_settings(request), quote=True)
    body = node.read_bytes().replace(
        _SETTINGS_TAG, _SETTINGS_TAG.replace(b'content=""', f'content="{settings}"'.encode())
    )
    return _file_response(node, "index.html", request, body)


async def _static(request: Request) -> Response:
    path = str(request.path_params["path"])
    node = _asset(path)
    if node is None:
        return _not_found(path)
    return _file_response(node, path, request)


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes: ``GET /`` (the page) and ``GET /static/{path}`` (its files).

    Both are relative to wherever the app is mounted. An unknown or unsafe
    asset path (``..``, a hidden file, a folder) answers 404 with the error
    envelope.
    """
    return [
        Route("/", _page, methods=["GET", "HEAD"], name="dashboard"),
        Route("/static/{path:path}", _static, methods=["GET", "HEAD"], name="dashboard_static"),
    ]
