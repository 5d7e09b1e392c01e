"""The guest allow-list (homeserver/handlers/guest_access.py), including endpoints this
server may not serve yet (the HTTP test covers every route it does serve)."""

from __future__ import annotations

import pytest

from homeserver.handlers.guest_access import GUEST_RULES, guest_may_request
from workers.config import ConfigError, parse_config

C = "/_matrix/client/v3"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{C}/rooms/!r:hs/initialSync"),
        ("GET", f"{C}/events"),
        ("GET", "/_matrix/client/v1/media/download/hs/abc"),
        ("GET", "/_matrix/client/v1/media/download/hs/abc/name.png"),
        ("GET", "/_matrix/client/v1/media/thumbnail/hs/abc"),
        ("PUT", f"{C}/profile/%40g%3Ahs/displayname"),
        ("DELETE", f"{C}/profile/%40g%3Ahs/displayname"),
        ("GET", f"{C}/devices"),
        ("PUT", f"{C}/devices/ABC"),
        ("POST", f"{C}/keys/claim"),
        ("PUT", f"{C}/rooms/!r:hs/state/m.room.topic"),
        ("PUT", f"{C}/rooms/!r:hs/state/m.room.topic/"),
        ("HEAD", f"{C}/sync"),
        ("GET", "/_matrix/client/r0/sync"),
        ("GET", "/_matrix/client/unstable/sync"),
    ],
)
def test_allowed(method: str, path: str) -> None:
    assert guest_may_request(method, path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        # Of the profile, only the display name.
        ("PUT", f"{C}/profile/%40g%3Ahs/avatar_url"),
        ("PUT", f"{C}/profile/%40g%3Ahs/m.custom"),
        ("DELETE", f"{C}/devices/ABC"),
        ("POST", f"{C}/delete_devices"),
        ("GET", f"{C}/keys/changes"),
        ("POST", f"{C}/keys/device_signing/upload"),
        ("POST", f"{C}/createRoom"),
        ("GET", f"{C}/joined_rooms"),
        ("POST", f"{C}/rooms/!r:hs/invite"),
        ("GET", f"{C}/rooms/!r:hs/joined_members"),
        # An encoded slash is not a path separator.
        ("GET", f"{C}/rooms/!r:hs%2Fstate/joined_members"),
        # A method the rule does not name; a trailing path; another API.
        ("DELETE", f"{C}/sync"),
        ("GET", f"{C}/sync/extra"),
        ("GET", "/_matrix/client/v4/sync"),
        ("GET", "/_matrix/media/v3/download/hs/abc"),
    ],
)
def test_forbidden(method: str, path: str) -> None:
    assert not guest_may_request(method, path)


def test_every_rule_says_why() -> None:
    assert all(rule.why and rule.methods for rule in GUEST_RULES)


def _config(**extra: object) -> dict[str, object]:
    return {
        "server_name": "hs",
        "data_dir": "/tmp",
        "main": {"listen": "127.0.0.1:8008"},
        "database": {"name": "sqlite3", "args": {"database": "/tmp/x.db"}},
        **extra,
    }


def test_config_default_off_and_parsed() -> None:
    assert parse_config(_config(), base_dir="/").allow_guest_access is False
    assert parse_config(_config(allow_guest_access=True), base_dir="/").allow_guest_access
    with pytest.raises(ConfigError, match="allow_guest_access"):
        parse_config(_config(allow_guest_access="yes"), base_dir="/")
