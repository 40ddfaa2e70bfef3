"""Run an async test once under asyncio and once under trio.

pytest-asyncio's auto mode claims every ``async def`` test for asyncio, so
anyio's own ``anyio_backend`` parametrisation never reaches trio there. The
decorators here turn the coroutine into a plain test parametrised by backend
that runs it on a fresh event loop. Sync fixtures of the original test keep
working, and so do marks applied to it (a ``parametrize`` below the decorator).

With a mock clock, trio runs on ``trio.testing.MockClock(autojump_threshold=0)``:
a timeout expires as soon as every task is blocked, without real waiting;
asyncio keeps the real clock, so such tests choose short timeouts there
(:func:`timeout_for`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

BACKENDS = ("asyncio", "trio")

AsyncTest = Callable[..., Awaitable[None]]


def run(backend: str, main: Callable[[], Awaitable[object]], *, mock_clock: bool = False) -> None:
    """Run ``main`` on ``backend``; on trio with ``mock_clock``, on an autojumping clock."""
    if backend == "trio" and mock_clock:
        import trio
        import trio.testing

        # anyio 4.11's trio backend drops backend_options, so the clock goes to trio itself.
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    else:
        anyio.run(main, backend=backend)


def on_both_backends(test: AsyncTest | None = None, *, mock_clock: bool = False) -> Any:
    """Turn ``async def test_x(...)`` into ``test_x[asyncio]`` and ``test_x[trio]``.

    Use bare (``@on_both_backends``) or with options
    (``@on_both_backends(mock_clock=True)``).
    """
    if test is None:
        return functools.partial(on_both_backends, mock_clock=mock_clock)
    fn = test

    def wrapper(backend: str, **fixtures: Any) -> None:
        run(backend, functools.partial(fn, **fixtures), mock_clock=mock_clock)

    signature = inspect.signature(fn)
    backend = inspect.Parameter("backend", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[backend, *signature.parameters.values()], return_annotation=None
    )
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__module__ = fn.__module__
    wrapper.pytestmark = list(getattr(fn, "pytestmark", []))  # type: ignore[attr-defined]
    return pytest.mark.parametrize("backend", BACKENDS)(wrapper)


def on_both(fn: AsyncTest) -> Callable[..., None]:
    """:func:`on_both_backends` on the real clock."""
    return on_both_backends(fn)  # type: ignore[no-any-return]


def on_both_autojump(fn: AsyncTest) -> Callable[..., None]:
    """:func:`on_both_backends` with trio's virtual clock jumping whenever every task waits."""
    return on_both_backends(fn, mock_clock=True)  # type: ignore[no-any-return]


def timeout_for(seconds: float) -> float:
    """``seconds`` under trio's autojump clock; a short real wait (0.05 s) under asyncio."""
    return seconds if current_backend() == "trio" else min(seconds, 0.05)


def current_backend() -> str:
    """The running library's name ("asyncio" or "trio")."""
    import sniffio

    return sniffio.current_async_library()
