"""Keep an ASGI service inside its memory: shed load, reserve per request, run a Warden.

Three pieces, pure ASGI (nothing here imports FastAPI; starlette is imported only
by :func:`reserve_dependency`, which needs its ``Request`` type):

- :class:`MemoryGuardMiddleware` is Envoy's overload manager applied to one
  process. At or above the shedding level a new request gets ``503`` with
  ``Retry-After`` and the JSON error envelope before its body is read. With a
  per-route ``cost`` the request runs inside ``reserve(cost)``, held until the
  response has been sent; a cost over the budget's capacity gets ``413``, a
  reservation that times out ``503`` with ``Retry-After``.
- :func:`lifespan` starts and stops a :class:`~memwarden.warden.Warden` for
  Starlette's or FastAPI's ``lifespan=`` and puts it on ``app.state.warden``.
- :func:`reserve_dependency` holds a reservation for the duration of a
  request as a FastAPI ``Depends(...)``.

Written by hand because no ASGI library sheds load by memory.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._envelope import retry_after_header, send_error
from ._validate import check_float, check_timeout
from .budget import Allocation, MemoryManager, Priority
from .errors import AllocationTimeoutError, MemoryAllocationError
from .pressure import PressureLevel

if TYPE_CHECKING:
    from .config import WardenConfig
    from .pressure import PressureMonitor
    from .warden import Warden

__all__ = ["GuardStats", "MemoryGuardMiddleware", "lifespan", "reserve_dependency"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Why a request was refused, as counted in :meth:`MemoryGuardMiddleware.stats`.
SHED_REASONS = ("pressure", "timeout", "too_large")


@dataclass(frozen=True)
class GuardStats:
    """What a :class:`MemoryGuardMiddleware` has done.

    ``shed`` counts refused requests by reason (``pressure``: at or above the
    shedding level; ``timeout``: the reservation timed out; ``too_large``: the
    cost exceeds the budget's capacity). ``reserved`` is the bytes held by
    requests in flight now, ``reserved_peak`` its high-water mark.
    """

    requests: int
    shed: dict[str, int]
    in_flight: int
    in_flight_peak: int
    reserved: int
    reserved_peak: int


def _check_level(name: str, value: object) -> PressureLevel:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a PressureLevel, got {type(value).__name__} {value!r}")
    try:
        return PressureLevel(value)
    except ValueError:
        raise ValueError(f"{name} must be a PressureLevel (0..3), got {value!r}") from None


def _check_cost(
    cost: object,
) -> Callable[[Scope], int | None] | dict[str, int] | None:
    if cost is None:
        return None
    if isinstance(cost, Mapping):
        table: dict[str, int] = {}
        for path, nbytes in cost.items():
            if not isinstance(path, str):
                raise TypeError(
                    f"cost keys must be paths (str), got {type(path).__name__} {path!r}"
                )
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
                raise ValueError(f"cost[{path!r}] must be an int >= 0, got {nbytes!r}")
            table[path] = nbytes
        return table
    if callable(cost):
        return cost
    raise TypeError(
        f"cost must be a mapping of path to bytes or a callable, got {type(cost).__name__}"
    )


def _check_exempt(exempt: object) -> tuple[str, ...]:
    if isinstance(exempt, str) or not isinstance(exempt, Sequence):
        raise TypeError(
            f"exempt must be a sequence of paths, got {type(exempt).__name__} {exempt!r}"
        )
    for path in exempt:
        if not isinstance(path, str):
            raise TypeError(f"exempt entries must be str, got {type(path).__name__} {path!r}")
    return tuple(exempt)


def _relative_path(scope: Scope) -> str:
    """The request path below the mount point (``root_path``)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def _find_warden(scope: Scope) -> Any:
    state = scope.get("state")
    if isinstance(state, Mapping) and state.get("warden") is not None:
        return state["warden"]
    app_state = getattr(scope.get("app"), "state", None)
    return getattr(app_state, "warden", None)


class MemoryGuardMiddleware:
    """ASGI middleware that sheds load by memory pressure and reserves memory per request.

    ``warden`` (or ``manager``/``monitor``) is found at request time, in this
    order: ``warden``, then ``manager``/``monitor``, then
    ``scope["state"]["warden"]`` (set by :func:`lifespan`), then
    ``scope["app"].state.warden``; finding none raises ``RuntimeError``. A
    Warden whose config sets ``enable_request_rejection=False`` is never shed
    for by pressure (reservations, 413 and timeouts still apply) unless
    ``shed_at`` is given.

    ``cost`` maps an exact path to the bytes a request to it reserves, or is a
    callable ``cost(scope) -> int | None``; ``priority(scope) -> int`` gives
    the reservation's priority (default NORMAL). ``shed_at`` is the level at
    which new requests are refused (default: the Warden's ``shed_level``,
    CRITICAL without a Warden). ``reserve_timeout`` bounds the wait for a
    reservation. ``retry_after`` is the ``Retry-After`` sent with a 503
    (default ``max(1, ceil(min_dwell))`` of the monitor). Paths in ``exempt``
    (exact, or a prefix when they end in ``/``) pass untouched; ``exempt`` and
    ``cost`` paths are matched relative to ``root_path``. Only ``http``
    requests are governed; ``lifespan`` and ``websocket`` pass through. While
    a request runs, its reservation is ``scope["state"]["memwarden_reservation"]``
    (``request.state.memwarden_reservation``), so the handler can hand part of
    it to what keeps its result (``sessions.update_session(...,
    charge_from=...)``, :meth:`MemoryManager.split`).

    Raises ``TypeError``/``ValueError`` naming the argument for bad input.
    """

    def __init__(
        self,
        app: ASGIApp,
        warden: Warden | None = None,
        *,
        manager: MemoryManager | None = None,
        monitor: PressureMonitor | None = None,
        cost: Callable[[Scope], int | None] | Mapping[str, int] | None = None,
        priority: Callable[[Scope], int] | None = None,
        shed_at: PressureLevel | None = None,
        reserve_timeout: float = 5.0,
        retry_after: float | None = None,
        exempt: Sequence[str] = ("/healthz", "/readyz", "/metrics"),
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {type(app).__name__}")
        if warden is not None and not isinstance(getattr(warden, "manager", None), MemoryManager):
            raise TypeError(f"warden must be a Warden, got {type(warden).__name__}")
        if manager is not None and not isinstance(manager, MemoryManager):
            raise TypeError(f"manager must be a MemoryManager, got {type(manager).__name__}")
        if monitor is not None and not hasattr(monitor, "level"):
            raise TypeError(f"monitor must be a PressureMonitor, got {type(monitor).__name__}")
        if priority is not None and not callable(priority):
            raise TypeError(f"priority must be callable, got {type(priority).__name__}")
        self.app = app
        self._warden = warden
        self._manager = manager
        self._monitor = monitor
        self._cost = _check_cost(cost)
        self._priority = priority
        self._shed_at = None if shed_at is None else _check_level("shed_at", shed_at)
        self._reserve_timeout = check_float("reserve_timeout", reserve_timeout, minimum=0.0)
        self._retry_after = (
            None if retry_after is None else check_float("retry_after", retry_after, minimum=0.0)
        )
        self._exempt = _check_exempt(exempt)
        self._lock = threading.Lock()
        self._requests = 0
        self._shed = dict.fromkeys(SHED_REASONS, 0)
        self._in_flight = 0
        self._in_flight_peak = 0
        self._reserved = 0
        self._reserved_peak = 0

    # -------------------------------------------------------------- helpers

    def _exempted(self, path: str) -> bool:
        for entry in self._exempt:
            if path == entry or (entry.endswith("/") and path.startswith(entry)):
                return True
        return False

    def _targets(
        self, scope: Scope
    ) -> tuple[Any, MemoryManager | None, PressureMonitor | None, PressureLevel | None]:
        warden = self._warden
        if warden is None and self._manager is None and self._monitor is None:
            warden = _find_warden(scope)
            if warden is None:
                raise RuntimeError(
                    "MemoryGuardMiddleware found no Warden: pass warden= or manager=/monitor=, "
                    "or start one with memwarden.asgi.lifespan (app.state.warden)"
                )
        if warden is not None:
            config = getattr(warden, "config", None)
            if not getattr(config, "enable_request_rejection", True):
                return warden, warden.manager, warden.monitor, None
            level = getattr(warden, "shed_level", PressureLevel.CRITICAL)
            return warden, warden.manager, warden.monitor, PressureLevel(level)
        return None, self._manager, self._monitor, PressureLevel.CRITICAL

    def _retry_after_value(self, monitor: PressureMonitor | None) -> str:
        if self._retry_after is not None:
            return retry_after_header(self._retry_after)
        dwell = float(getattr(monitor, "min_dwell", 0.0) or 0.0)
        return retry_after_header(max(1.0, math.ceil(dwell)))

    def _count_shed(self, warden: Any, reason: str) -> None:
        with self._lock:
            self._shed[reason] += 1
        record = getattr(warden, "record_shed", None)
        if record is not None:
            record(reason)

    async def _refuse(
        self, send: Send, warden: Any, status: int, reason: str, message: str, retry: str | None
    ) -> None:
        self._count_shed(warden, reason)
        kind = "overloaded" if status == 503 else "payload_too_large"
        headers = [("retry-after", retry)] if retry is not None else []
        await send_error(send, status, kind, message, headers=headers)

    def _cost_of(self, scope: Scope, path: str) -> int:
        cost = self._cost
        if cost is None:
            return 0
        nbytes = cost.get(path) if isinstance(cost, dict) else cost(scope)
        if nbytes is None:
            return 0
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"cost for {path!r} must be an int >= 0 or None, got {nbytes!r}")
        return nbytes

    def _enter(self, nbytes: int) -> None:
        with self._lock:
            self._in_flight += 1
            self._in_flight_peak = max(self._in_flight_peak, self._in_flight)
            self._reserved += nbytes
            self._reserved_peak = max(self._reserved_peak, self._reserved)

    def _leave(self, nbytes: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._reserved -= nbytes

    # ----------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Govern one ASGI connection (only ``http`` scopes; others pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _relative_path(scope)
        if self._exempted(path):
            await self.app(scope, receive, send)
            return
        warden, manager, monitor, shed_level = self._targets(scope)
        with self._lock:
            self._requests += 1
        if self._shed_at is not None:
            shed_level = self._shed_at
        if monitor is not None and shed_level is not None and monitor.level >= shed_level:
            await self._refuse(
                send,
                warden,
                503,
                "pressure",
                f"memory pressure is {monitor.level.label}: the service sheds load "
                f"at {shed_level.label}",
                self._retry_after_value(monitor),
            )
            return
        nbytes = self._cost_of(scope, path) if manager is not None else 0
        if manager is None or nbytes == 0:
            self._enter(0)
            try:
                await self.app(scope, receive, send)
            finally:
                self._leave(0)
            return
        if nbytes > manager.capacity:
            await self._refuse(
                send,
                warden,
                413,
                "too_large",
                f"this request needs {nbytes} bytes, more than the memory budget's "
                f"capacity of {manager.capacity} bytes",
                None,
            )
            return
        priority = Priority.NORMAL if self._priority is None else self._priority(scope)
        try:
            allocation = await manager.acquire(
                nbytes, priority=priority, timeout=self._reserve_timeout
            )
        except AllocationTimeoutError:
            await self._refuse(
                send,
                warden,
                503,
                "timeout",
                f"no memory for this request ({nbytes} bytes) within {self._reserve_timeout:g} s",
                self._retry_after_value(monitor),
            )
            return
        except MemoryAllocationError as exc:  # the capacity shrank meanwhile
            await self._refuse(send, warden, 413, "too_large", str(exc), None)
            return
        self._enter(nbytes)
        # The handler may hand part of it on (MemoryManager.split, or a session's
        # charge_from): request.state.memwarden_reservation in Starlette/FastAPI.
        state = scope.get("state")
        if isinstance(state, dict):
            state["memwarden_reservation"] = allocation
        else:
            scope["state"] = {"memwarden_reservation": allocation}
        try:
            # The app returns once it has sent the last body chunk (streaming
            # included) or the client has gone: only then is the memory free.
            await self.app(scope, receive, send)
        finally:
            allocation.release()
            self._leave(nbytes)

    def stats(self) -> GuardStats:
        """A consistent snapshot of what the middleware has done."""
        with self._lock:
            return GuardStats(
                requests=self._requests,
                shed=dict(self._shed),
                in_flight=self._in_flight,
                in_flight_peak=self._in_flight_peak,
                reserved=self._reserved,
                reserved_peak=self._reserved_peak,
            )


def lifespan(
    warden_or_config: Warden | WardenConfig | None = None, **warden_kwargs: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A Starlette/FastAPI ``lifespan=`` that runs a Warden for the app's lifetime.

    Given a :class:`~memwarden.warden.Warden`, it enters and leaves that one;
    given a ``WardenConfig`` or None, it builds ``Warden(config,
    **warden_kwargs)`` at startup. The Warden is put on ``app.state.warden``
    and in the lifespan state (``request.state.warden``). Raises
    ``TypeError`` for anything else, or keyword arguments with a ready Warden.
    """
    from .config import WardenConfig
    from .warden import Warden

    given: Warden | None = None
    config: WardenConfig | None = None
    if isinstance(warden_or_config, Warden):
        if warden_kwargs:
            raise TypeError(
                f"lifespan got a Warden and keyword arguments {sorted(warden_kwargs)}: "
                "pass the arguments to Warden() instead"
            )
        given = warden_or_config
    elif warden_or_config is None or isinstance(warden_or_config, WardenConfig):
        config = warden_or_config
    else:
        raise TypeError(
            "warden_or_config must be a Warden, a WardenConfig or None, got "
            f"{type(warden_or_config).__name__}"
        )

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        warden = given if given is not None else Warden(config, **warden_kwargs)
        async with warden:
            state = getattr(app, "state", None)
            if state is not None:
                state.warden = warden
            yield {"warden": warden}

    return run


def reserve_dependency(
    nbytes: int | Callable[[Any], int | Awaitable[int]],
    *,
    timeout: float | None = None,
    priority: int = Priority.NORMAL,
    warden: Warden | None = None,
    manager: MemoryManager | None = None,
) -> Callable[[Any], AsyncIterator[Allocation]]:
    """A FastAPI ``Depends(...)`` that holds a reservation while the request runs.

    ``nbytes`` is a size or ``nbytes(request)`` (sync or async). Without
    ``warden``/``manager`` it uses ``request.app.state.warden`` (set by
    :func:`lifespan`). A size over the capacity answers 413, a reservation
    that times out 503 with ``Retry-After``. The reservation is released when
    the dependency's teardown runs, which FastAPI >= 0.118 does after the
    response is sent. Raises ``TypeError``/``ValueError`` naming the argument.
    """
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    if not callable(nbytes) and (isinstance(nbytes, bool) or not isinstance(nbytes, int)):
        raise TypeError(f"nbytes must be an int or a callable, got {type(nbytes).__name__}")
    if isinstance(nbytes, int) and nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
    timeout = check_timeout("timeout", timeout)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__} {priority!r}")
    if manager is not None and not isinstance(manager, MemoryManager):
        raise TypeError(f"manager must be a MemoryManager, got {type(manager).__name__}")

    async def dependency(request: Request) -> AsyncIterator[Allocation]:
        budget = manager
        monitor: Any = None
        if budget is None:
            found = warden if warden is not None else _find_warden(request.scope)
            if found is None:
                raise RuntimeError(
                    "reserve_dependency found no Warden: pass warden= or manager=, or start "
                    "one with memwarden.asgi.lifespan (app.state.warden)"
                )
            budget, monitor = found.manager, found.monitor
        size: object = nbytes(request) if callable(nbytes) else nbytes
        if inspect.isawaitable(size):
            size = await size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"nbytes(request) must return an int >= 0, got {size!r}")
        if size > budget.capacity:
            raise HTTPException(
                413,
                detail=f"this request needs {size} bytes, more than the memory budget's "
                f"capacity of {budget.capacity} bytes",
            )
        try:
            allocation = await budget.acquire(size, priority=priority, timeout=timeout)
        except AllocationTimeoutError:
            dwell = float(getattr(monitor, "min_dwell", 0.0) or 0.0)
            raise HTTPException(
                503,
                detail=f"no memory for this request ({size} bytes) within {timeout} s",
                headers={"Retry-After": retry_after_header(max(1.0, dwell))},
            ) from None
        try:
            yield allocation
        finally:
            allocation.release()

    # FastAPI reads the parameter's type to inject the Request; the module's
    # postponed annotations would hide it behind a string it cannot resolve.
    dependency.__annotations__ = {"request": Request, "return": AsyncIterator[Allocation]}
    return dependency
