"""WardenConfig: defaults, environment parsing, and errors that name the variable."""

from __future__ import annotations

import json
import math

import pytest

from memwarden import ConfigError, MemoryConfig, PressureThresholds, WardenConfig
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
