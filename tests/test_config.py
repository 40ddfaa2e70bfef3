"""WardenConfig: defaults, environment parsing, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re

import pytest

from memwarden import ConfigError, MemoryConfig, PressureLevel, PressureThresholds, WardenConfig
from memwarden.units import GiB, MiB


def test_defaults_follow_the_seeds() -> None:
    config = WardenConfig()
    assert config.max_memory_percent == 85.0
    assert config.max_session_bytes == 2 * GiB
    assert config.session_timeout == 1800.0
    assert config.aggressive_gc is False
    assert config.gc_optimization_enabled is True
    assert config.thresholds == PressureThresholds()
    assert MemoryConfig is WardenConfig


def test_from_env_reads_seed_variables() -> None:
    config = WardenConfig.from_env(
        {
            "MAX_MEMORY_PERCENT": "70",
            "MAX_SESSION_MEMORY_GB": "0.5",
            "SESSION_TIMEOUT_MINUTES": "10",
            "AGGRESSIVE_GC": "true",
            "MEMORY_POOL_MAX_SIZE": "50",
            "MEMORY_SNAPSHOT_INTERVAL": "15",
            "GC_OPTIMIZATION_ENABLED": "off",
        }
    )
    assert config.max_memory_percent == 70.0
    assert config.max_session_bytes == GiB // 2
    assert config.session_timeout == 600.0
    assert config.effective_gc_aggressiveness == "high"
    assert config.memory_pool_max_size == 50
    assert config.memory_snapshot_interval == 15.0
    assert config.gc_optimization_enabled is False


def test_memwarden_prefix_wins_and_reads_every_field() -> None:
    config = WardenConfig.from_env(
        {
            "MAX_MEMORY_PERCENT": "70",
            "MEMWARDEN_MAX_MEMORY_PERCENT": "60",
            "MEMWARDEN_CAPACITY": "256MiB",
            "MEMWARDEN_MONITOR_INTERVAL": "0.5",
            "MEMWARDEN_STATE_DIR": "/tmp/state",
            "MEMWARDEN_HIGH_THRESHOLD": "0.8",
            "MEMWARDEN_STATE_MAX_BYTES": "1MiB",
        }
    )
    assert config.max_memory_percent == 60.0
    assert config.capacity == 256 * MiB
    assert config.monitor_interval == 0.5
    assert config.state_dir == "/tmp/state"
    assert config.thresholds.high == 0.8
    assert config.state_max_bytes == MiB


def test_empty_environment_gives_defaults() -> None:
    assert WardenConfig.from_env({}) == WardenConfig()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MAX_MEMORY_PERCENT", "abc"),
        ("MAX_MEMORY_PERCENT", "150"),
        ("MAX_MEMORY_PERCENT", "nan"),
        ("MAX_MEMORY_PERCENT", "0"),
        ("SESSION_TIMEOUT_MINUTES", "-5"),
        ("AGGRESSIVE_GC", "maybe"),
        ("MEMORY_POOL_MAX_SIZE", "1.5"),
        ("MEMORY_POOL_MAX_SIZE", "0"),
        ("MEMWARDEN_CAPACITY", "lots"),
        ("MEMWARDEN_GC_AGGRESSIVENESS", "extreme"),
        ("MEMWARDEN_LEAK_WINDOW", "0"),
        ("MEMWARDEN_MONITOR_INTERVAL", "inf"),
    ],
)
def test_bad_values_name_the_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        WardenConfig.from_env({var: value})
    assert var in str(info.value)
    assert repr(value) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_threshold_combination_error_names_the_variables() -> None:
    with pytest.raises(ConfigError, match=r"MEMWARDEN_HIGH_THRESHOLD='0\.5'"):
        WardenConfig.from_env({"MEMWARDEN_HIGH_THRESHOLD": "0.5"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_memory_percent", math.nan),
        ("max_memory_percent", True),
        ("capacity", 0),
        ("capacity", 1.5),
        ("cache_shrink_fraction", 0.0),
        ("monitor_interval", 0),
        ("gc_aggressiveness", "turbo"),
        ("aggressive_gc", 1),
    ],
)
def test_constructor_validates_fields(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        WardenConfig(**{field: value})  # type: ignore[arg-type]


def test_replace_validates_and_to_dict_is_json() -> None:
    config = WardenConfig(state_dir="/tmp/x")
    assert json.loads(json.dumps(config.to_dict()))["state_dir"] == "/tmp/x"
    assert config.replace(leak_window=50).leak_window == 50
    with pytest.raises(ConfigError, match="leak_window"):
        config.replace(leak_window=0)
    assert config.leak_window == 100


def _bad_values(field_type: str) -> list[object]:
    if field_type == "float":
        return ["1", True, math.nan, math.inf, None]
    if field_type == "int":
        return [1.5, True, "3", None]
    if field_type == "bool":
        return [1, "yes", None]
    if field_type == "str":
        return [5, None, "bogus"]
    if field_type == "str | None":
        return [5, b"/tmp", "", 1.5]
    if field_type == "int | None":
        return [1.5, True, "1GiB"]
    if field_type == "PressureLevel":
        return ["extreme", 7, True, None, 1.5, PressureLevel.LOW]
    raise AssertionError(f"no bad values for {field_type}")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (f.name, value)
        for f in dataclasses.fields(WardenConfig)
        for value in _bad_values(str(f.type))
    ],
)
def test_every_field_refuses_a_bad_value_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        WardenConfig(**{field: value})
    assert f"{field}={value!r}" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("medium_threshold", 0.0, r"must be in \(0, 1\]"),
        ("critical_threshold", 1.5, r"must be in \(0, 1\]"),
        ("medium_threshold", 0.9, r"must be < high_threshold \(0\.85\)"),
        ("hysteresis", -0.01, "must be >= 0"),
        ("hysteresis", 0.7, r"must be >= 0 and < medium_threshold \(0\.7\)"),
    ],
)
def test_threshold_errors_name_the_config_field(field: str, value: float, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}={value!r}: {why}"):
        WardenConfig(**{field: value})  # type: ignore[arg-type]


def test_state_dir_takes_a_path_and_stores_its_str(tmp_path: pathlib.Path) -> None:
    assert WardenConfig(state_dir=tmp_path).state_dir == str(tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="state_dir=5: must be None or a path"):
        WardenConfig(state_dir=5)  # type: ignore[arg-type]


def test_defaults_of_the_governing_settings() -> None:
    config = WardenConfig()
    assert config.sessions_use_budget is True
    assert config.session_budget_priority == 75
    assert config.session_budget_timeout == 30.0
    assert config.shed_level is PressureLevel.CRITICAL
    assert config.monitor_min_dwell == 1.0
    assert config.allocator_tuning is True
    assert config.allocator_mmap_threshold == MiB
    assert config.allocator_trim_threshold == 2 * MiB
    assert config.allocator_trim_after_bytes == 64 * MiB
    assert config.allocator_trim_interval == 1.0


def test_seed_003_defaults_are_settings() -> None:
    config = WardenConfig()
    assert config.emergency_cleanup_threshold_mb == 500.0
    assert config.enable_proactive_gc is True
    assert config.proactive_gc_threshold == 90.0
    assert config.enable_request_rejection is True
    assert config.enable_background_monitoring is False


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("MEMWARDEN_SESSIONS_USE_BUDGET", "off", "sessions_use_budget", False),
        ("MEMWARDEN_SESSION_BUDGET_PRIORITY", "100", "session_budget_priority", 100),
        ("MEMWARDEN_SESSION_BUDGET_PRIORITY", "-5", "session_budget_priority", -5),
        ("MEMWARDEN_SESSION_BUDGET_TIMEOUT", "2.5", "session_budget_timeout", 2.5),
        ("MEMWARDEN_SESSION_BUDGET_TIMEOUT", "0", "session_budget_timeout", 0.0),
        (
            "MEMWARDEN_EMERGENCY_CLEANUP_THRESHOLD_MB",
            "256",
            "emergency_cleanup_threshold_mb",
            256.0,
        ),
        ("MEMWARDEN_ENABLE_PROACTIVE_GC", "no", "enable_proactive_gc", False),
        ("MEMWARDEN_PROACTIVE_GC_THRESHOLD", "80", "proactive_gc_threshold", 80.0),
        ("MEMWARDEN_ENABLE_REQUEST_REJECTION", "false", "enable_request_rejection", False),
        ("MEMWARDEN_ENABLE_BACKGROUND_MONITORING", "1", "enable_background_monitoring", True),
        ("MEMWARDEN_SHED_LEVEL", "high", "shed_level", PressureLevel.HIGH),
        ("MEMWARDEN_SHED_LEVEL", " MEDIUM ", "shed_level", PressureLevel.MEDIUM),
        ("MEMWARDEN_SHED_LEVEL", "2", "shed_level", PressureLevel.HIGH),
        ("MEMWARDEN_MONITOR_MIN_DWELL", "0", "monitor_min_dwell", 0.0),
        ("MEMWARDEN_MONITOR_MIN_DWELL", "5", "monitor_min_dwell", 5.0),
        ("MEMWARDEN_ALLOCATOR_TUNING", "off", "allocator_tuning", False),
        ("MEMWARDEN_SHARE_RESERVATIONS", "false", "share_reservations", False),
        ("MEMWARDEN_ALLOCATOR_MMAP_THRESHOLD", "4MiB", "allocator_mmap_threshold", 4 * MiB),
        ("MEMWARDEN_ALLOCATOR_TRIM_THRESHOLD", "131072", "allocator_trim_threshold", 128 * 1024),
        ("MEMWARDEN_ALLOCATOR_TRIM_AFTER_BYTES", "1GiB", "allocator_trim_after_bytes", GiB),
        ("MEMWARDEN_ALLOCATOR_TRIM_INTERVAL", "0.25", "allocator_trim_interval", 0.25),
    ],
)
def test_governing_settings_from_the_environment(
    var: str, raw: str, field: str, expected: object
) -> None:
    config = WardenConfig.from_env({var: raw})
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)


@pytest.mark.parametrize(
    ("var", "raw", "why"),
    [
        ("MEMWARDEN_SESSIONS_USE_BUDGET", "sometimes", "expected one of true/false"),
        ("MEMWARDEN_SESSION_BUDGET_PRIORITY", "high", "invalid literal"),
        ("MEMWARDEN_SESSION_BUDGET_PRIORITY", "7.5", "invalid literal"),
        ("MEMWARDEN_SESSION_BUDGET_TIMEOUT", "-1", "must be >= 0"),
        ("MEMWARDEN_SESSION_BUDGET_TIMEOUT", "inf", "must be finite"),
        ("MEMWARDEN_EMERGENCY_CLEANUP_THRESHOLD_MB", "-1", "must be >= 0"),
        ("MEMWARDEN_ENABLE_PROACTIVE_GC", "2", "expected one of true/false"),
        ("MEMWARDEN_PROACTIVE_GC_THRESHOLD", "101", r"must be in \(0, 100\]"),
        ("MEMWARDEN_PROACTIVE_GC_THRESHOLD", "0", r"must be in \(0, 100\]"),
        ("MEMWARDEN_ENABLE_REQUEST_REJECTION", "maybe", "expected one of true/false"),
        ("MEMWARDEN_ENABLE_BACKGROUND_MONITORING", "x", "expected one of true/false"),
        ("MEMWARDEN_SHED_LEVEL", "extreme", "unknown pressure level"),
        ("MEMWARDEN_SHED_LEVEL", "4", "unknown pressure level"),
        ("MEMWARDEN_SHED_LEVEL", "low", "must be medium, high or critical"),
        ("MEMWARDEN_SHED_LEVEL", "0", "must be medium, high or critical"),
        ("MEMWARDEN_MONITOR_MIN_DWELL", "-0.5", "must be >= 0"),
        ("MEMWARDEN_MONITOR_MIN_DWELL", "nan", "NaN"),
        ("MEMWARDEN_ALLOCATOR_TUNING", "enabled", "expected one of true/false"),
        ("MEMWARDEN_ALLOCATOR_MMAP_THRESHOLD", "64MiB", r"must be an int in \[0, 33554432\]"),
        ("MEMWARDEN_ALLOCATOR_MMAP_THRESHOLD", "big", ""),
        ("MEMWARDEN_ALLOCATOR_TRIM_THRESHOLD", "4GiB", r"must be an int in \[0, 2147483647\]"),
        ("MEMWARDEN_ALLOCATOR_TRIM_AFTER_BYTES", "0", "must be an int >= 1"),
        ("MEMWARDEN_ALLOCATOR_TRIM_INTERVAL", "-1", "must be >= 0"),
    ],
)
def test_governing_settings_refuse_bad_environment_values(var: str, raw: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{var}={re.escape(repr(raw))}: .*{why}"):
        WardenConfig.from_env({var: raw})


def test_shed_level_takes_a_label_or_a_number_in_code() -> None:
    assert WardenConfig(shed_level="high").shed_level is PressureLevel.HIGH  # type: ignore[arg-type]
    assert WardenConfig(shed_level=1).shed_level is PressureLevel.MEDIUM  # type: ignore[arg-type]
    assert json.loads(json.dumps(WardenConfig().to_dict()))["shed_level"] == 3
    with pytest.raises(ConfigError, match=r"^shed_level='low': must be medium, high or critical"):
        WardenConfig(shed_level="low")  # type: ignore[arg-type]
