"""The HTTP API over a Warden: seed 001's endpoints, status routes, events, metrics, dashboard.

``create_app(warden)`` returns a Starlette application; mount it in a FastAPI or
Starlette app or serve it with uvicorn. Every JSON answer is
``{"status": "success", "data": {...}}`` and every error
``{"status": "error", "error": {"type": ..., "message": ...}}``. See
``docs/guides/http.md`` for the routes, the token and Prometheus scraping.

Importing this module imports starlette; ``import memwarden`` does not.
"""

from __future__ import annotations

from ._app import create_app
from ._events import EventStreams

__all__ = ["EventStreams", "create_app"]
