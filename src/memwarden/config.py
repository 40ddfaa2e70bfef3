"""Configuration: one frozen dataclass, filled from code or the environment.

``WardenConfig.from_env()`` reads the seed systems' variables
(``MAX_MEMORY_PERCENT``, ``MAX_SESSION_MEMORY_GB``, ``SESSION_TIMEOUT_MINUTES``,
``AGGRESSIVE_GC``, ``MEMORY_POOL_MAX_SIZE``, ``MEMORY_SNAPSHOT_INTERVAL``,
``GC_OPTIMIZATION_ENABLED``) and ``MEMWARDEN_<FIELD>`` for every field; the
``MEMWARDEN_`` spelling wins when both are set.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from .pressure import PressureLevel, PressureThresholds
from .units import GiB, MiB, parse_size

__all__ = ["MemoryConfig", "WardenConfig"]

_GC_LEVELS = ("low", "moderate", "high")

# Seed variable names for the fields that had one.
_SEED_ENV: dict[str, str] = {
    "max_memory_percent": "MAX_MEMORY_PERCENT",
    "max_session_memory_gb": "MAX_SESSION_MEMORY_GB",
    "session_timeout_minutes": "SESSION_TIMEOUT_MINUTES",
    "aggressive_gc": "AGGRESSIVE_GC",
    "memory_pool_max_size": "MEMORY_POOL_MAX_SIZE",
    "memory_snapshot_interval": "MEMORY_SNAPSHOT_INTERVAL",
    "gc_optimization_enabled": "GC_OPTIMIZATION_ENABLED",
}

# glibc refuses an M_MMAP_THRESHOLD above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems);
# mallopt takes a C int.
_MAX_MMAP_THRESHOLD = 32 * MiB
_MAX_C_INT = 2**31 - 1

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _parse_bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if math.isnan(value):
        raise ValueError("NaN is not allowed")
    return value


def _parse_level(raw: str) -> PressureLevel:
    text = raw.strip()
    value: str | int = int(text) if text.lstrip("+-").isdigit() else text
    return PressureLevel.parse(value, name="shed_level")


def _parse_optional_str(raw: str) -> str | None:
    return raw if raw.strip() else None


def _parse_optional_size(raw: str) -> int | None:
    return parse_size(raw) if raw.strip() else None


@dataclass(frozen=True)
class WardenConfig:
    """Every tunable of a :class:`~memwarden.Warden`, with the seeds' defaults.

    Invalid values raise :class:`ConfigError` naming the field and the value.
    """

    max_memory_percent: float = 85.0
    """Share of the detected memory limit the budget may grant (and MemoryMonitor's warning)."""
    max_session_memory_gb: float = 2.0
    """Per-session byte limit, in GiB."""
    session_timeout_minutes: float = 30.0
    """Inactivity after which a session expires."""
    aggressive_gc: bool = False
    """Shortcut for ``gc_aggressiveness="high"``."""
    memory_pool_max_size: int = 1000
    """Default ``max_size`` for seed-style pools."""
    memory_snapshot_interval: float = 60.0
    """Seconds between history snapshots (profiling and leak checks)."""
    gc_optimization_enabled: bool = True
    """Whether the Warden applies GC thresholds and runs GC in optimize paths."""
    gc_aggressiveness: str = "moderate"
    """GC profile: ``"low"``, ``"moderate"`` or ``"high"``."""
    capacity: int | None = None
    """Budget capacity in bytes; ``None`` derives it from the limit and max_memory_percent."""
    monitor_interval: float = 1.0
    """Seconds between pressure samples."""
    renotify_interval: float = 10.0
    """Seconds between repeated events while HIGH or CRITICAL."""
    monitor_history: int = 100
    """Samples the pressure monitor keeps in its history ring."""
    monitor_use_psi: bool = True
    """Wake the sampler early on kernel pressure notifications where available."""
    medium_threshold: float = 0.70
    """Fraction of the limit at which pressure becomes MEDIUM."""
    high_threshold: float = 0.85
    """Fraction of the limit at which pressure becomes HIGH."""
    critical_threshold: float = 0.95
    """Fraction of the limit at which pressure becomes CRITICAL."""
    hysteresis: float = 0.02
    """A level is left only below its threshold minus this."""
    session_cleanup_interval: float = 300.0
    """Seconds between inactive-session sweeps."""
    expire_sessions_on_critical: bool = True
    """At CRITICAL pressure, expire least-recently-used idle sessions."""
    critical_session_min_idle: float = 60.0
    """Sessions idle for less than this are spared at CRITICAL pressure."""
    pool_reap_interval: float = 30.0
    """Seconds between idle-object reaps of every pool."""
    critical_create_timeout: float = 5.0
    """How long new pool objects wait for CRITICAL pressure to pass."""
    cache_shrink_fraction: float = 0.5
    """Share of each cache dropped at HIGH pressure."""
    cache_sweep_interval: float = 30.0
    """Seconds between expiry sweeps of TTL caches."""
    leak_check_interval: float = 60.0
    """Seconds between leak verdicts."""
    leak_sample_interval: float = 10.0
    """Seconds between samples of the watched series (memory, sessions, pools, caches)."""
    leak_growth_threshold: float = 1000.0
    """Bytes per second of sustained floor growth below which nothing is called a leak."""
    leak_window: int = 100
    """Samples the leak detector judges."""
    leak_min_samples: int = 10
    """Samples needed before any verdict."""
    profiling_enabled: bool = False
    """Trace allocations with tracemalloc while the Warden runs (costs CPU and memory)."""
    state_dir: str | None = None
    """Directory where history and leak findings persist (None: not persisted).

    A ``pathlib.Path`` (any ``os.PathLike`` naming a str path) is stored as its str.
    """
    state_max_bytes: int = 8 * 1024 * 1024
    """Size bound of each persisted history file before rotation."""
    state_keep: int = 2
    """Rotated history files kept per kind."""
    sessions_use_budget: bool = True
    """Charge every session's bytes to the Warden's budget."""
    session_budget_priority: int = 75
    """Budget priority of session charges: above NORMAL (50), so storing a finished result
    is not starved by new requests."""
    session_budget_timeout: float = 30.0
    """Seconds a session create or update waits for budget bytes before
    ``AllocationTimeoutError`` (the old data is kept)."""
    emergency_cleanup_threshold_mb: float = 500.0
    """Run the emergency path (collection, cleanup callbacks, ``malloc_trim``) when available
    memory falls below this many MiB (0: only at CRITICAL pressure)."""
    enable_proactive_gc: bool = True
    """Collect garbage before memory gets critical, at ``proactive_gc_threshold``."""
    proactive_gc_threshold: float = 90.0
    """Percent of the memory limit in use at which a proactive collection runs."""
    enable_request_rejection: bool = True
    """Let the ASGI middleware shed new requests at ``shed_level`` (503 + Retry-After)."""
    enable_background_monitoring: bool = False
    """Seed-style ``MemoryMonitor``: run its own periodic check. A Warden always monitors."""
    shed_level: PressureLevel = PressureLevel.CRITICAL
    """Pressure level at which the Warden is not ready and new requests are shed
    (a level, its label such as ``"high"``, or its number 1..3)."""
    monitor_min_dwell: float = 1.0
    """Seconds a level must stay below its line (minus hysteresis) before the monitor leaves it."""
    share_reservations: bool = True
    """Under a memory cgroup, share reserved bytes with the other processes governing it
    (workers of one container), so none grants room another has already granted."""
    allocator_tuning: bool = True
    """On glibc, fix the mmap and trim thresholds and trim after large releases."""
    allocator_mmap_threshold: int = 1 * MiB
    """Blocks at least this large are mmapped, so freeing them unmaps them (at most 32 MiB)."""
    allocator_trim_threshold: int = 2 * MiB
    """Free bytes at the heap's top past which glibc returns them to the kernel."""
    allocator_trim_after_bytes: int = 64 * MiB
    """Budget bytes released since the last ``malloc_trim`` that trigger the next one."""
    allocator_trim_interval: float = 1.0
    """Least seconds between two ``malloc_trim`` calls after releases."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, "must be a number")
            if math.isnan(value) or math.isinf(value):
                raise bad(name, "must be finite")
            return float(value)

        if not 0 < number("max_memory_percent") <= 100:
            raise bad("max_memory_percent", "must be in (0, 100]")
        for name in (
            "max_session_memory_gb", "session_timeout_minutes", "memory_snapshot_interval",
            "monitor_interval", "renotify_interval", "session_cleanup_interval",
            "pool_reap_interval", "cache_sweep_interval", "leak_check_interval",
            "leak_sample_interval", "leak_growth_threshold",
        ):  # fmt: skip
            if number(name) <= 0:
                raise bad(name, "must be > 0")
        for name in ("critical_create_timeout", "critical_session_min_idle",
                     "session_budget_timeout", "emergency_cleanup_threshold_mb",
                     "monitor_min_dwell", "allocator_trim_interval"):  # fmt: skip
            if number(name) < 0:
                raise bad(name, "must be >= 0")
        if not 0 < number("proactive_gc_threshold") <= 100:
            raise bad("proactive_gc_threshold", "must be in (0, 100]")
        if not 0 < number("cache_shrink_fraction") <= 1:
            raise bad("cache_shrink_fraction", "must be in (0, 1]")
        for name in ("memory_pool_max_size", "state_max_bytes", "monitor_history",
                     "leak_window", "leak_min_samples", "allocator_trim_after_bytes"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be an int >= 1")
        for name, most in (("allocator_mmap_threshold", _MAX_MMAP_THRESHOLD),
                           ("allocator_trim_threshold", _MAX_C_INT)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
                raise bad(name, f"must be an int in [0, {most}]")
        value = self.session_budget_priority
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("session_budget_priority", "must be an int")
        try:
            level = PressureLevel.parse(self.shed_level, name="shed_level")
        except (TypeError, ValueError):
            raise bad("shed_level", "must be medium, high or critical, or 1..3") from None
        if level is PressureLevel.LOW:
            raise bad("shed_level", "must be medium, high or critical, or 1..3")
        object.__setattr__(self, "shed_level", level)
        if (
            isinstance(self.state_keep, bool)
            or not isinstance(self.state_keep, int)
            or (self.state_keep < 0)
        ):
            raise bad("state_keep", "must be an int >= 0")
        if self.leak_min_samples > self.leak_window:
            raise bad("leak_min_samples", f"must be <= leak_window ({self.leak_window})")
        if self.capacity is not None and (
            isinstance(self.capacity, bool) or not isinstance(self.capacity, int)
            or self.capacity < 1
        ):  # fmt: skip
            raise bad("capacity", "must be None or an int >= 1")
        if self.state_dir is not None:
            state_dir = self.state_dir
            if isinstance(state_dir, os.PathLike):
                state_dir = os.fspath(state_dir)
            if not isinstance(state_dir, str):
                raise bad("state_dir", "must be None or a path (str or os.PathLike)")
            if not state_dir.strip():
                raise bad("state_dir", "must be None or a non-empty path")
            object.__setattr__(self, "state_dir", state_dir)
        if not isinstance(self.gc_aggressiveness, str) or (
            self.gc_aggressiveness not in _GC_LEVELS
        ):
            raise bad("gc_aggressiveness", f"must be one of {', '.join(_GC_LEVELS)}")
        for name in ("aggressive_gc", "gc_optimization_enabled", "expire_sessions_on_critical",
                     "monitor_use_psi", "profiling_enabled", "sessions_use_budget",
                     "enable_proactive_gc", "enable_request_rejection",
                     "enable_background_monitoring", "allocator_tuning",
                     "share_reservations"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be a bool")
        levels = ("medium_threshold", "high_threshold", "critical_threshold")
        for name in levels:
            if not 0 < number(name) <= 1:
                raise bad(name, "must be in (0, 1]")
        for lower, upper in itertools.pairwise(levels):
            if number(lower) >= number(upper):
                raise bad(lower, f"must be < {upper} ({getattr(self, upper)!r})")
        if not 0 <= number("hysteresis") < number("medium_threshold"):
            raise bad(
                "hysteresis", f"must be >= 0 and < medium_threshold ({self.medium_threshold!r})"
            )
        try:
            self.thresholds  # noqa: B018 - validates the combination
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"pressure thresholds: {exc}") from None

    @property
    def thresholds(self) -> PressureThresholds:
        """The pressure thresholds these settings describe."""
        return PressureThresholds(
            medium=self.medium_threshold,
            high=self.high_threshold,
            critical=self.critical_threshold,
            hysteresis=self.hysteresis,
        )

    @property
    def max_session_bytes(self) -> int:
        """``max_session_memory_gb`` in bytes."""
        return int(self.max_session_memory_gb * GiB)

    @property
    def session_timeout(self) -> float:
        """``session_timeout_minutes`` in seconds."""
        return self.session_timeout_minutes * 60.0

    @property
    def effective_gc_aggressiveness(self) -> str:
        """``"high"`` when ``aggressive_gc`` is set, else ``gc_aggressiveness``."""
        return "high" if self.aggressive_gc else self.gc_aggressiveness

    def replace(self, **changes: Any) -> WardenConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WardenConfig:
        """Build a config from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigError` naming the variable and its value when one
        does not parse or is out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for field in fields(cls):
            names = [f"MEMWARDEN_{field.name.upper()}"]
            if field.name in _SEED_ENV:
                names.append(_SEED_ENV[field.name])
            for var in names:
                if var in env:
                    raw = env[var]
                    try:
                        values[field.name] = _PARSERS[field.name](raw)
                    except (TypeError, ValueError) as exc:
                        raise ConfigError(f"{var}={raw!r}: {exc}") from None
                    sources[field.name] = var
                    break
        try:
            return cls(**values)
        except ConfigError as exc:
            # Name the variable rather than the field when the value came from the environment.
            message = str(exc)
            for name, var in sources.items():
                prefix = f"{name}={values[name]!r}"
                if message.startswith(prefix):
                    message = f"{var}={env[var]!r}" + message[len(prefix) :]
                    break
            else:
                named = [f"{var}={env[var]!r}" for var in sources.values()]
                if named:
                    message = f"{message} (set by {', '.join(named)})"
            raise ConfigError(message) from None


def _parser_for(field_type: str) -> Callable[[str], Any]:
    table: dict[str, Callable[[str], Any]] = {
        "float": _parse_float,
        "int": int,
        "bool": _parse_bool,
        "str": str,
        "str | None": _parse_optional_str,
        "int | None": _parse_optional_size,
        "PressureLevel": _parse_level,
    }
    return table[field_type]


_PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _parser_for(str(f.type)) for f in fields(WardenConfig)
}
for _name in ("state_max_bytes", "allocator_mmap_threshold", "allocator_trim_threshold",
              "allocator_trim_after_bytes"):  # fmt: skip
    _PARSERS[_name] = parse_size

MemoryConfig = WardenConfig
"""Seed 003's name for :class:`WardenConfig`."""
