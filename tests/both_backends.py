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
    return _both(fn, autojump=False)


def on_both_autojump(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Like :func:`on_both`, with trio's virtual clock jumping whenever every task waits.

    A timeout then costs no real time under trio; under asyncio choose a short one
    with :func:`timeout_for`.
    """
    return _both(fn, autojump=True)


def timeout_for(seconds: float) -> float:
    """``seconds`` under trio's autojump clock; a short real wait (0.05 s) under asyncio."""
    return seconds if current_backend() == "trio" else min(seconds, 0.05)


def _both(fn: Callable[..., Awaitable[None]], *, autojump: bool) -> Callable[..., None]:
    def test(backend: str, **fixtures: Any) -> None:
        options: dict[str, Any] = {}
        if autojump and backend == "trio":
            import trio.testing

            options["clock"] = trio.testing.MockClock(autojump_threshold=0)
        anyio.run(functools.partial(fn, **fixtures), backend=backend, backend_options=options)

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
