"""The OpenAPI 3.1 document served at ``/api/openapi.json``, written by hand next to the routes.

Hand-written because the routes return the library's own dicts (seed 001's
bodies, ``to_dict()`` snapshots) rather than declared models, and a generator
would have nothing to read. Every route has its success schema (inside the
envelope) and the errors it can answer; tests run schemathesis over it.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]

Schema = dict[str, Any]

_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_NINT: Schema = {"type": ["integer", "null"]}
_NNUM: Schema = {"type": ["number", "null"]}
_NSTR: Schema = {"type": ["string", "null"]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, Schema], **optional: Schema) -> Schema:
    """An object with these required properties (and any other)."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **optional},
    }


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


_LEVEL: Schema = {"type": "string", "enum": ["low", "medium", "high", "critical"]}
_TREND: Schema = {"type": "string", "enum": ["increasing", "decreasing", "stable"]}

_SAMPLE_FIELDS: dict[str, Schema] = {
    "timestamp": _NUM,
    "used": _INT,
    "limit": _INT,
    "available": _INT,
    "rss": _NINT,
    "source": _STR,
    "psi_some_avg10": _NNUM,
    "fraction": _NUM,
}

_BUDGET_FIELDS: dict[str, Schema] = {
    "total_allocated": _INT,
    "available": _INT,
    "peak_usage": _INT,
    "current_usage": _INT,
    "timestamp": _NUM,
    "allocations": _INT,
    "waiters": _INT,
    "evictions": _INT,
    "timeouts": _INT,
    "waiters_peak": _INT,
    "granted": _INT,
    "evicted_bytes": _INT,
    "cancelled": _INT,
    "headroom": _NINT,
    "managed": _INT,
    "unmanaged": _NINT,
    "limit": _NINT,
    "evictable": _INT,
}

_PACKAGE_METRICS: dict[str, Schema] = {
    "current_memory_usage": _NINT,
    "peak_memory_usage": _NINT,
    "memory_footprint": _NINT,
    "memory_leak_score": _NUM,
    "memory_trend": _TREND,
    "memory_pressure_level": _LEVEL,
    "memory_growth_rate": _NUM,
    "average_memory_usage": _NNUM,
    "memory_variance": _NNUM,
    "memory_check_count": _INT,
    "last_memory_check": _NNUM,
    "memory_history_length": _INT,
}

_LEAK_REPORT: dict[str, Schema] = {
    "is_leak": _BOOL,
    "score": _NUM,
    "trend": _TREND,
    "growth_rate": _NUM,
    "samples": _INT,
}

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "status": {"type": "string", "enum": ["error"]},
            "error": _object({"type": _STR, "message": _STR}),
        }
    ),
    "Health": _object({"ready": _BOOL, "level": _LEVEL}),
    "Sample": _object(_SAMPLE_FIELDS),
    "BudgetStats": _object(_BUDGET_FIELDS),
    "Memory": _object(
        {
            **_SAMPLE_FIELDS,
            "level": _LEVEL,
            "ready": _BOOL,
            "shed_level": _LEVEL,
            "budget": _ref("BudgetStats"),
            "thresholds": _object(
                {"medium": _NUM, "high": _NUM, "critical": _NUM, "hysteresis": _NUM}
            ),
            "shed": _map({"type": "integer"}),
        }
    ),
    "History": _object(
        {
            "samples": _array(
                _object(
                    {**_SAMPLE_FIELDS, "managed": _INT, "cache": _INT},
                    unmanaged=_NINT,
                    capacity=_INT,
                )
            )
        }
    ),
    "Budget": _object({**_BUDGET_FIELDS, "capacity": _INT}),
    "Sessions": _object({"sessions": _INT, "total_bytes": _INT}, leased=_INT, peak_sessions=_INT),
    "Caches": _object(
        {"caches": _map(_object({"hits": _INT, "misses": _INT, "size": _INT, "nbytes": _INT}))},
        total_nbytes=_INT,
        total_entries=_INT,
    ),
    "Pools": _object(
        {"pools": _map(_object({"size": _INT, "idle": _INT, "in_use": _INT, "waiters": _INT}))}
    ),
    "Supervisor": _object(
        {
            "name": _STR,
            "running": _BOOL,
            "tasks": _map(
                _object(
                    {
                        "name": _STR,
                        "state": {
                            "type": "string",
                            "enum": ["running", "sleeping", "backoff", "stopped", "failed"],
                        },
                        "runs": _INT,
                        "failures": _INT,
                        "restarts": _INT,
                        "last_error": _NSTR,
                    }
                )
            ),
        }
    ),
    "GC": _object(
        {
            "thresholds": _array(_INT),
            "enabled": _BOOL,
            "collections": _array(
                _object(
                    {
                        "generation": _INT,
                        "collections": _INT,
                        "collected": _INT,
                        "uncollectable": _INT,
                    }
                )
            ),
        }
    ),
    "Leaks": _object(
        {
            "series": _map(_object({**_LEAK_REPORT, "kind": _STR})),
            "leaks": _array(_STR),
            "total_leaks": _INT,
            "watched": _INT,
        }
    ),
    "PackageSummary": _object(
        {
            "total_current_memory": _INT,
            "total_peak_memory": _INT,
            "total_memory_footprint": _INT,
            "packages_with_leaks": _array(
                _object(
                    {"package_name": _STR, "leak_score": _NUM, "trend": _TREND, "growth_rate": _NUM}
                )
            ),
            "memory_trends": _map(_INT),
            "memory_pressure_levels": _map(_INT),
            "system_memory_pressure": _LEVEL,
            "total_packages": _INT,
            "loaded_packages": _INT,
        }
    ),
    "PackageInfo": _object(
        {
            "package_name": _STR,
            "memory_metrics": _object(_PACKAGE_METRICS),
            "is_loaded": _BOOL,
            "status": _STR,
        }
    ),
    "PackageLeaks": _object(
        {
            "leaks": _array(
                _object(
                    {
                        "package_name": _STR,
                        "leak_score": _NUM,
                        "memory_trend": _TREND,
                        "memory_growth_rate": _NUM,
                        "current_memory_usage": _NINT,
                        "peak_memory_usage": _NINT,
                        "memory_footprint": _NINT,
                        "memory_check_count": _INT,
                        "last_memory_check": _NNUM,
                    }
                )
            ),
            "total_leaks": _INT,
            "threshold": _NUM,
            "detection_time": _NUM,
        }
    ),
    "Suggestions": _object(
        {
            "suggestions": _array(
                _object(
                    {
                        "type": _STR,
                        "package_name": _NSTR,
                        "severity": {"type": "string", "enum": ["high", "medium", "low"]},
                        "message": _STR,
                        "recommendation": _STR,
                        "value": {"type": ["number", "string"]},
                    }
                )
            ),
            "total_suggestions": _INT,
            "high_severity": _INT,
            "medium_severity": _INT,
            "low_severity": _INT,
            "generation_time": _NUM,
        }
    ),
    "GarbageCollection": _object(
        {
            "memory_before": _INT,
            "memory_after": _INT,
            "memory_freed": _INT,
            "objects_collected": _INT,
            "garbage_collection_time": _NUM,
        },
        generation=_INT,
        duration=_NUM,
    ),
    "MetricsUpdate": _object({"message": _STR, "update_time": _NUM}, packages=_INT, tracing=_BOOL),
}

_ERROR_TEXT = {
    400: "A bad query parameter, or a body that is not JSON.",
    401: "Missing or wrong bearer token.",
    404: "No such package, file or route.",
    405: "Method not allowed here.",
    413: "The request body is over 64 KiB.",
    422: "The JSON body has unknown fields or bad values.",
    429: "This POST route was called too often; see Retry-After.",
    503: "Not ready: memory pressure is at or above the shedding level.",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code in codes
    }


def _ok(name: str, description: str) -> dict[str, Any]:
    envelope = _object({"status": {"type": "string", "enum": ["success"]}, "data": _ref(name)})
    return {
        "200": {"description": description, "content": {"application/json": {"schema": envelope}}}
    }


def _get(
    summary: str,
    schema: str,
    *,
    parameters: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
    tag: str = "status",
) -> dict[str, Any]:
    codes = (400,) + (() if public else (401,)) + errors
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {**_ok(schema, summary), **_errors(*sorted(set(codes)))},
    }
    if parameters:
        operation["parameters"] = parameters
    if public:
        operation["security"] = []
    return {"get": operation}


def _post(summary: str, schema: str, body: Schema) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "tags": ["packages"],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {
                **_ok(schema, summary),
                **_errors(400, 401, 413, 422, 429),
            },
        }
    }


def _raw(
    summary: str, media_type: str, schema: Schema, *, public: bool, errors: tuple[int, ...] = ()
) -> dict[str, Any]:
    codes = (400,) + (() if public else (401,)) + errors
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": summary, "content": {media_type: {"schema": schema}}},
            **_errors(*sorted(set(codes))),
        },
    }
    if public:
        operation["security"] = []
    return {"get": operation}


_MEMORY = "/api/packages/memory"

_PATHS: dict[str, Any] = {
    "/healthz": _get("Liveness: 200 while the process runs", "Health", public=True, tag="health"),
    "/readyz": _get(
        "Readiness: 503 at or above the shedding level",
        "Health",
        public=True,
        errors=(503,),
        tag="health",
    ),
    f"{_MEMORY}/summary": _get(
        "Memory summary of every tracked package (seed 001)", "PackageSummary", tag="packages"
    ),
    f"{_MEMORY}/leaks": _get(
        "Packages with a leak score at or above the threshold (seed 001)",
        "PackageLeaks",
        parameters=[
            {
                "name": "threshold",
                "in": "query",
                "required": False,
                "schema": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
            }
        ],
        tag="packages",
    ),
    f"{_MEMORY}/optimization-suggestions": _get(
        "What to do about memory (seed 001)", "Suggestions", tag="packages"
    ),
    f"{_MEMORY}/garbage-collection": _post(
        "Run a garbage collection and report what it freed (seed 001)",
        "GarbageCollection",
        {
            "type": "object",
            "properties": {"generation": {"type": "integer", "minimum": 0, "maximum": 2}},
            "additionalProperties": False,
        },
    ),
    f"{_MEMORY}/update-metrics": _post(
        "Attribute traced memory to the tracked packages now (seed 001)",
        "MetricsUpdate",
        {"type": "object", "additionalProperties": False},
    ),
    _MEMORY + "/{package_name}": {
        "get": {
            **_get(
                "One package's memory figures (seed 001)",
                "PackageInfo",
                errors=(404, 405),
                tag="packages",
            )["get"],
            "parameters": [
                {"name": "package_name", "in": "path", "required": True, "schema": _STR}
            ],
        }
    },
    "/api/memory": _get("The newest sample, the level and the budget", "Memory"),
    "/api/memory/history": _get(
        "Retained samples, oldest first, with managed/unmanaged/cache bytes",
        "History",
        parameters=[
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "keep the newest N samples",
                "schema": {"type": "integer", "minimum": 1},
            }
        ],
    ),
    "/api/memory/events": _raw(
        "Pressure events as Server-Sent Events (event: pressure; data: one JSON event)",
        "text/event-stream",
        _STR,
        public=False,
        errors=(503,),
    ),
    "/api/budget": _get("The memory budget's statistics", "Budget"),
    "/api/sessions": _get("Session statistics", "Sessions"),
    "/api/caches": _get("Every cache's statistics", "Caches"),
    "/api/pools": _get("Every pool's statistics", "Pools"),
    "/api/supervisor": _get("The supervised tasks", "Supervisor"),
    "/api/gc": _get("Garbage collector settings and counts", "GC"),
    "/api/leaks": _get("Leak verdicts of every watched series", "Leaks"),
    "/api/openapi.json": _raw(
        "This document (no envelope)", "application/json", {"type": "object"}, public=False
    ),
    "/metrics": _raw("Prometheus text exposition", "text/plain", _STR, public=False),
    "/": _raw("The dashboard page", "text/html", _STR, public=True),
    "/static/{path}": {
        "get": {
            **_raw(
                "A dashboard asset", "application/octet-stream", _STR, public=True, errors=(404,)
            )["get"],
            "parameters": [{"name": "path", "in": "path", "required": True, "schema": _STR}],
        }
    },
}


def openapi_document(*, root_path: str = "", metrics_auth: bool = True) -> dict[str, Any]:
    """The OpenAPI document, its server URL set to ``root_path`` (the mount point)."""
    paths = copy.deepcopy(_PATHS)
    if not metrics_auth:
        operation = paths["/metrics"]["get"]
        operation["security"] = []
        operation["responses"].pop("401", None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "memwarden",
            "version": _version(),
            "description": "Memory governance of one service: seed 001's package routes, "
            "status, events, metrics and a dashboard. Every JSON answer is "
            '{"status": "success", "data": ...}; every error {"status": "error", '
            '"error": {"type": ..., "message": ...}}.',
        },
        "servers": [{"url": root_path or "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    from .. import __version__

    return str(__version__)
