"""memwarden: memory governance for async Python services, built on anyio.

Awaitable memory budgets, a pressure event stream, a supervisor for periodic
work, pools, sessions, caches that shrink under pressure, GC control, leak
detection, profiling and per-package tracking. Everything public is importable
from here; ``memwarden.testing`` holds helpers for tests.

``import memwarden`` is cheap: the errors and size helpers load with the
package, every other name loads its module on first use (PEP 562), so a
service pays only for the parts it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AllocationTimeoutError as AllocationTimeoutError
from .errors import CacheError as CacheError
from .errors import ConfigError as ConfigError
from .errors import GCError as GCError
from .errors import InsufficientMemoryError as InsufficientMemoryError
from .errors import MemoryAllocationError as MemoryAllocationError
from .errors import MemoryOptimizationError as MemoryOptimizationError
from .errors import MemwardenError as MemwardenError
from .errors import PoolClosedError as PoolClosedError
from .errors import PoolError as PoolError
from .errors import PoolExhaustedError as PoolExhaustedError
from .errors import ResourceError as ResourceError
from .errors import SessionError as SessionError
from .errors import SessionMemoryError as SessionMemoryError
from .errors import SessionNotFoundError as SessionNotFoundError
from .errors import SupervisorError as SupervisorError
from .units import GiB as GiB
from .units import KiB as KiB
from .units import MiB as MiB
from .units import format_size as format_size
from .units import parse_size as parse_size

if TYPE_CHECKING:
    from .budget import Allocation as Allocation
    from .budget import MemoryManager as MemoryManager
    from .budget import MemoryStats as MemoryStats
    from .budget import Priority as Priority
    from .cache import CacheInfo as CacheInfo
    from .cache import CacheManager as CacheManager
    from .cache import CacheStats as CacheStats
    from .cache import LRUCache as LRUCache
    from .cache import MemoizedFunction as MemoizedFunction
    from .cache import TTLCache as TTLCache
    from .cache import WeakValueCache as WeakValueCache
    from .cache import memoize as memoize
    from .config import MemoryConfig as MemoryConfig
    from .config import WardenConfig as WardenConfig
    from .gc import GarbageCollectionManager as GarbageCollectionManager
    from .gc import GarbageCollectionOptimizer as GarbageCollectionOptimizer
    from .gc import GCController as GCController
    from .gc import GCPauseStats as GCPauseStats
    from .gc import GCStats as GCStats
    from .history import HistoryStore as HistoryStore
    from .leaks import LeakDetector as LeakDetector
    from .leaks import LeakEvent as LeakEvent
    from .leaks import LeakReport as LeakReport
    from .leaks import LeakWatcher as LeakWatcher
    from .leaks import analyze_memory_trend as analyze_memory_trend
    from .leaks import calculate_memory_statistics as calculate_memory_statistics
    from .modules import LazyLoader as LazyLoader
    from .modules import get_lazy_loader as get_lazy_loader
    from .monitor import MemoryMetrics as MemoryMetrics
    from .monitor import MemoryMonitor as MemoryMonitor
    from .pool import MemoryPool as MemoryPool
    from .pool import ObjectPool as ObjectPool
    from .pool import PoolLease as PoolLease
    from .pool import PoolStats as PoolStats
    from .pressure import MonitorStats as MonitorStats
    from .pressure import PressureEvent as PressureEvent
    from .pressure import PressureLevel as PressureLevel
    from .pressure import PressureMonitor as PressureMonitor
    from .pressure import PressureThresholds as PressureThresholds
    from .pressure import Subscription as Subscription
    from .probes import MemorySample as MemorySample
    from .probes import Probe as Probe
    from .probes import ProcessProbe as ProcessProbe
    from .probes import StaticProbe as StaticProbe
    from .probes import SystemProbe as SystemProbe
    from .probes import detect_memory_limit as detect_memory_limit
    from .profiler import ContextMemoryStats as ContextMemoryStats
    from .profiler import FunctionMemoryStats as FunctionMemoryStats
    from .profiler import MemoryProfiler as MemoryProfiler
    from .profiler import ProfileSnapshot as ProfileSnapshot
    from .profiler import function_memory_stats as function_memory_stats
    from .profiler import get_function_stats as get_function_stats
    from .profiler import memory_efficient_context as memory_efficient_context
    from .profiler import monitor_function_memory as monitor_function_memory
    from .profiler import reset_function_stats as reset_function_stats
    from .resources import ResourceManager as ResourceManager
    from .resources import ResourceManagerStats as ResourceManagerStats
    from .resources import ResourceStats as ResourceStats
    from .sessions import SessionData as SessionData
    from .sessions import SessionManager as SessionManager
    from .sessions import SessionStats as SessionStats
    from .sizeof import deep_sizeof as deep_sizeof
    from .supervisor import RestartPolicy as RestartPolicy
    from .supervisor import Supervisor as Supervisor
    from .supervisor import TaskNotFoundError as TaskNotFoundError
    from .supervisor import TaskStatus as TaskStatus
    from .warden import Warden as Warden

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Allocation": "budget",
    "MemoryManager": "budget",
    "MemoryStats": "budget",
    "Priority": "budget",
    "CacheInfo": "cache",
    "CacheManager": "cache",
    "CacheStats": "cache",
    "LRUCache": "cache",
    "MemoizedFunction": "cache",
    "TTLCache": "cache",
    "WeakValueCache": "cache",
    "memoize": "cache",
    "MemoryConfig": "config",
    "WardenConfig": "config",
    "GarbageCollectionManager": "gc",
    "GarbageCollectionOptimizer": "gc",
    "GCController": "gc",
    "GCPauseStats": "gc",
    "GCStats": "gc",
    "HistoryStore": "history",
    "LeakDetector": "leaks",
    "LeakEvent": "leaks",
    "LeakReport": "leaks",
    "LeakWatcher": "leaks",
    "analyze_memory_trend": "leaks",
    "calculate_memory_statistics": "leaks",
    "LazyLoader": "modules",
    "get_lazy_loader": "modules",
    "MemoryMetrics": "monitor",
    "MemoryMonitor": "monitor",
    "MemoryPool": "pool",
    "ObjectPool": "pool",
    "PoolLease": "pool",
    "PoolStats": "pool",
    "MonitorStats": "pressure",
    "PressureEvent": "pressure",
    "PressureLevel": "pressure",
    "PressureMonitor": "pressure",
    "PressureThresholds": "pressure",
    "Subscription": "pressure",
    "MemorySample": "probes",
    "Probe": "probes",
    "ProcessProbe": "probes",
    "StaticProbe": "probes",
    "SystemProbe": "probes",
    "detect_memory_limit": "probes",
    "ContextMemoryStats": "profiler",
    "FunctionMemoryStats": "profiler",
    "MemoryProfiler": "profiler",
    "ProfileSnapshot": "profiler",
    "function_memory_stats": "profiler",
    "get_function_stats": "profiler",
    "memory_efficient_context": "profiler",
    "monitor_function_memory": "profiler",
    "reset_function_stats": "profiler",
    "ResourceManager": "resources",
    "ResourceManagerStats": "resources",
    "ResourceStats": "resources",
    "SessionData": "sessions",
    "SessionManager": "sessions",
    "SessionStats": "sessions",
    "deep_sizeof": "sizeof",
    "RestartPolicy": "supervisor",
    "Supervisor": "supervisor",
    "TaskNotFoundError": "supervisor",
    "TaskStatus": "supervisor",
    "Warden": "warden",
}
"""Public name -> the submodule that defines it, imported on first access."""

_SUBMODULES = frozenset(
    {
        "asgi", "budget", "cache", "cli", "config", "errors", "gc", "history", "http",
        "leaks", "modules", "monitor", "pool", "pressure", "probes", "profiler",
        "resources", "sessions", "sizeof", "supervisor", "testing", "units", "warden",
    }
)  # fmt: skip
"""Public submodules reachable as attributes (``memwarden.budget``) without an import."""


def __getattr__(name: str) -> Any:
    """Load a public name's module on first access and keep the name here."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, loaded or not, and the module's dunders; no import helpers."""
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})


__all__ = [
    "Allocation",
    "AllocationTimeoutError",
    "CacheError",
    "CacheInfo",
    "CacheManager",
    "CacheStats",
    "ConfigError",
    "ContextMemoryStats",
    "FunctionMemoryStats",
    "GCController",
    "GCError",
    "GCPauseStats",
    "GCStats",
    "GarbageCollectionManager",
    "GarbageCollectionOptimizer",
    "GiB",
    "HistoryStore",
    "InsufficientMemoryError",
    "KiB",
    "LRUCache",
    "LazyLoader",
    "LeakDetector",
    "LeakEvent",
    "LeakReport",
    "LeakWatcher",
    "MemoizedFunction",
    "MemoryAllocationError",
    "MemoryConfig",
    "MemoryManager",
    "MemoryMetrics",
    "MemoryMonitor",
    "MemoryOptimizationError",
    "MemoryPool",
    "MemoryProfiler",
    "MemorySample",
    "MemoryStats",
    "MemwardenError",
    "MiB",
    "MonitorStats",
    "ObjectPool",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "PoolLease",
    "PoolStats",
    "PressureEvent",
    "PressureLevel",
    "PressureMonitor",
    "PressureThresholds",
    "Priority",
    "Probe",
    "ProcessProbe",
    "ProfileSnapshot",
    "ResourceError",
    "ResourceManager",
    "ResourceManagerStats",
    "ResourceStats",
    "RestartPolicy",
    "SessionData",
    "SessionError",
    "SessionManager",
    "SessionMemoryError",
    "SessionNotFoundError",
    "SessionStats",
    "StaticProbe",
    "Subscription",
    "Supervisor",
    "SupervisorError",
    "SystemProbe",
    "TTLCache",
    "TaskNotFoundError",
    "TaskStatus",
    "Warden",
    "WardenConfig",
    "WeakValueCache",
    "analyze_memory_trend",
    "calculate_memory_statistics",
    "deep_sizeof",
    "detect_memory_limit",
    "format_size",
    "function_memory_stats",
    "get_function_stats",
    "get_lazy_loader",
    "memoize",
    "memory_efficient_context",
    "monitor_function_memory",
    "parse_size",
    "reset_function_stats",
    "__version__",
]
