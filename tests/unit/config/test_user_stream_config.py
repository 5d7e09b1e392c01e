"""Config of the per-user streams: presence, their limits, and who writes them."""

from __future__ import annotations

from typing import Any

import pytest

from workers.config import STREAMS, ConfigError, LimitsConfig, PresenceConfig, parse_config


def _parse(**extra: Any) -> Any:
    return parse_config({"server_name": "e.org", "data_dir": "/d", **extra}, base_dir="/")


def test_defaults() -> None:
    config = _parse()
    assert config.presence == PresenceConfig(enabled=True)
    assert config.limits.max_typing_timeout_ms == LimitsConfig().max_typing_timeout_ms
    assert config.limits.max_to_device_per_sync == 100
    assert {"typing", "receipts", "presence", "account_data", "to_device"} <= set(STREAMS)
    assert all(config.writer_of(s).name == "main" for s in STREAMS)


def test_presence_and_limits_are_read() -> None:
    config = _parse(
        presence={"enabled": False, "idle_timeout_ms": 1000, "active_window_ms": 500},
        limits={"max_typing_timeout_ms": 5000, "max_to_device_per_sync": 7},
    )
    assert config.presence == PresenceConfig(False, 1000, 500)
    assert config.limits.max_typing_timeout_ms == 5000
    assert config.limits.max_to_device_per_sync == 7


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"presence": {"enabled": "yes"}}, "presence.enabled"),
        ({"presence": {"idle_timeout_ms": 0}}, "presence.idle_timeout_ms"),
        ({"presence": {"colour": "green"}}, "presence.colour"),
        ({"presence": []}, "presence"),
        ({"limits": {"max_to_device_per_sync": 0}}, "limits.max_to_device_per_sync"),
        ({"stream_writers": {"typing": "nobody"}}, "stream_writers.typing"),
    ],
)
def test_bad_values_name_their_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(**extra)
    assert e.value.key == key
