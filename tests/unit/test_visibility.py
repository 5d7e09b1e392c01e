"""History visibility rules (pure): each visibility x viewer x event position, and the
before-or-after rule for history-visibility events and the viewer's own member events."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from homeserver.handlers.room_upgrade import convert_power_levels
from homeserver.handlers.visibility import (
    DEFAULT_VISIBILITY,
    RoomTimeline,
    normalise_visibility,
    visibility_allows,
)
from storage.stores.events import PersistedEvent
from storage.stores.room_extras import MembershipRow

RV = get_room_version("11")
VIEWER = "@viewer:hs"
OTHER = "@alice:hs"


def event(
    pos: int, event_type: str = "m.room.message", state_key: str | None = None, **content: Any
) -> PersistedEvent:
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": OTHER,
        "room_id": "!r:hs",
        "content": content,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    assert RV is not None
    return PersistedEvent(Event(pdu, RV, f"$e{pos}"), pos)


def timeline(visibility: str, memberships: list[tuple[int, str]]) -> RoomTimeline:
    return RoomTimeline.build(
        [(1, visibility)], [MembershipRow(pos, m, f"$m{pos}") for pos, m in memberships]
    )


# Viewer histories: membership events at positions 10 and 20; events at 5 (before their
# membership), 15 (after it) and 25 (after the second change).
VIEWERS: dict[str, list[tuple[int, str]]] = {
    "joined": [(10, "join")],
    "left": [(10, "join"), (20, "leave")],
    "invited": [(10, "invite")],
    "invited_then_joined": [(10, "invite"), (20, "join")],
    "banned": [(10, "join"), (20, "ban")],
    "never": [],
}

EXPECTED: dict[str, dict[str, tuple[bool, bool, bool]]] = {
    "world_readable": {v: (True, True, True) for v in VIEWERS},
    "shared": {
        "joined": (True, True, True),
        "left": (True, True, False),
        "invited": (False, False, False),
        "invited_then_joined": (True, True, True),
        "banned": (True, True, False),
        "never": (False, False, False),
    },
    "invited": {
        "joined": (False, True, True),
        "left": (False, True, False),
        "invited": (False, True, True),
        "invited_then_joined": (False, True, True),
        "banned": (False, True, False),
        "never": (False, False, False),
    },
    "joined": {
        "joined": (False, True, True),
        "left": (False, True, False),
        "invited": (False, False, False),
        "invited_then_joined": (False, False, True),
        "banned": (False, True, False),
        "never": (False, False, False),
    },
}


@pytest.mark.parametrize("visibility", sorted(EXPECTED))
@pytest.mark.parametrize("viewer", sorted(VIEWERS))
def test_matrix(visibility: str, viewer: str) -> None:
    tl = timeline(visibility, VIEWERS[viewer])
    got = tuple(tl.allows(event(pos), VIEWER) for pos in (5, 15, 25))
    assert got == EXPECTED[visibility][viewer]


def test_visibility_applies_as_it_was_when_each_event_was_sent() -> None:
    # joined until 30, then world_readable: a stranger sees only what came after.
    tl = RoomTimeline.build([(1, "joined"), (30, "world_readable")], [])
    assert [tl.allows(event(p), VIEWER) for p in (20, 40)] == [False, True]


def test_history_visibility_event_uses_before_or_after() -> None:
    tl = RoomTimeline.build([(1, "joined"), (30, "world_readable"), (40, "joined")], [])
    to_world = event(30, "m.room.history_visibility", "", history_visibility="world_readable")
    back = event(40, "m.room.history_visibility", "", history_visibility="joined")
    assert tl.allows(to_world, VIEWER) and tl.allows(back, VIEWER)
    # An ordinary state event at 40 follows the value after it.
    assert not tl.allows(event(40, "m.room.topic", ""), VIEWER)


def test_own_member_event_uses_before_or_after() -> None:
    tl = timeline("joined", [(10, "join"), (20, "leave")])
    assert tl.allows(event(20, "m.room.member", VIEWER, membership="leave"), VIEWER)
    assert tl.allows(event(10, "m.room.member", VIEWER, membership="join"), VIEWER)
    # Someone else's leave at the same point is not covered by the viewer's own rule.
    other = timeline("joined", [(10, "join"), (20, "leave")])
    assert not other.allows(event(25, "m.room.member", OTHER, membership="leave"), VIEWER)


@pytest.mark.parametrize("value", [None, "", "everyone", "SHARED"])
def test_unknown_visibility_is_shared(value: str | None) -> None:
    assert normalise_visibility(value) == DEFAULT_VISIBILITY == "shared"
    assert RoomTimeline.build([], []).visibility_at(5) == "shared"


def test_rules_directly() -> None:
    assert visibility_allows("world_readable", None, False)
    assert visibility_allows("joined", "join", False)
    assert visibility_allows("shared", None, True)
    assert not visibility_allows("shared", "invite", False)
    assert visibility_allows("invited", "invite", False)
    assert not visibility_allows("joined", "invite", True)


def test_power_levels_conversion_for_upgrades() -> None:
    v9, v10, v12 = (get_room_version(v) for v in ("9", "10", "12"))
    assert v9 is not None and v10 is not None and v12 is not None
    old = {
        "users": {"@a:hs": "100", "@b:hs": 50},
        "events": {"m.room.name": "50"},
        "ban": "60",
        "x": 1,
    }
    converted = convert_power_levels(old, v9, v10, frozenset(), frozenset({"@a:hs"}))
    assert converted == {
        "users": {"@a:hs": 100, "@b:hs": 50},
        "events": {"m.room.name": 50},
        "ban": 60,
        "x": 1,
    }
    # To v12 the new creator is dropped from users; from v12 old creators keep 100.
    assert convert_power_levels(old, v9, v12, frozenset(), frozenset({"@a:hs"}))["users"] == {
        "@b:hs": 50
    }
    from_v12 = convert_power_levels(
        {"users": {"@b:hs": 50}}, v12, v10, frozenset({"@c:hs"}), frozenset()
    )
    assert from_v12["users"] == {"@b:hs": 50, "@c:hs": 100}
