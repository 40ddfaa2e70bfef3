"""memwarden: memory governance for async Python services, built on anyio.

Awaitable memory budgets, a pressure event stream, a supervisor for periodic
work, pools, sessions, caches that shrink under pressure, GC control and leak
detection. Everything public is importable from here.
"""

from __future__ import annotations

from .config import MemoryConfig as MemoryConfig
from .config import WardenConfig as WardenConfig
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
from .pressure import PressureEvent as PressureEvent
from .pressure import PressureLevel as PressureLevel
from .pressure import PressureThresholds as PressureThresholds
from .probes import MemorySample as MemorySample
from .probes import Probe as Probe
from .probes import StaticProbe as StaticProbe
from .units import format_size as format_size
from .units import parse_size as parse_size

__version__ = "0.1.0"

__all__ = [
    "AllocationTimeoutError",
    "CacheError",
    "ConfigError",
    "GCError",
    "InsufficientMemoryError",
    "MemoryAllocationError",
    "MemoryConfig",
    "MemoryOptimizationError",
    "MemorySample",
    "MemwardenError",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "PressureEvent",
    "PressureLevel",
    "PressureThresholds",
    "Probe",
    "ResourceError",
    "SessionError",
    "SessionMemoryError",
    "SessionNotFoundError",
    "StaticProbe",
    "SupervisorError",
    "WardenConfig",
    "__version__",
    "format_size",
    "parse_size",
]
