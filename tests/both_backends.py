"""Run an async test once under asyncio and once under trio.

pytest-asyncio's auto mode claims every ``async def`` test for asyncio, so
anyio's own ``anyio_backend`` parametrisation never reaches trio there. This
decorator turns the coroutine into a plain test parametrised by backend that
calls ``anyio.run``. Sync fixtures of the original test keep working.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

BACKENDS = ("asyncio", "trio")


def on_both(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Turn an ``async def test_x(...)`` into ``test_x[asyncio]`` and ``test_x[trio]``."""

    def test(backend: str, **fixtures: Any) -> None:
        anyio.run(functools.partial(fn, **fixtures), backend=backend)

    signature = inspect.signature(fn)
    backend = inspect.Parameter("backend", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    test.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[backend, *signature.parameters.values()], return_annotation=None
    )
    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    test.__module__ = fn.__module__
    test.pytestmark = list(getattr(fn, "pytestmark", []))  # type: ignore[attr-defined]
    return pytest.mark.parametrize("backend", BACKENDS)(test)


def current_backend() -> str:
    """The running library's name ("asyncio" or "trio")."""
    import sniffio

    return sniffio.current_async_library()
