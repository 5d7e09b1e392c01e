"""The redaction algorithms of room versions 1–12.

Redaction strips an event down to the keys that the protocol needs to keep the room
working (the "essential" keys). The redacted form is what gets signed and what the
reference hash (and so the event ID, in room versions 3+) covers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from homeserver.events.room_versions import RedactionAlgorithm, RoomVersion, get_room_version

__all__ = [
    "redact_client_event",
    "redact_content",
    "redact_pdu",
    "resolve_room_version",
]

# Top-level keys kept by the algorithms of room versions 1–10.
_TOP_LEVEL_V1: frozenset[str] = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# Room version 11 no longer protects `origin`, `membership` and `prev_state`.
_TOP_LEVEL_V11: frozenset[str] = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVELS_V1: frozenset[str] = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

# Content keys kept, per event type, per algorithm. m.room.create under V11 (keeps
# everything) and m.room.member's third_party_invite under V11 are handled in code.
_CONTENT_KEYS: dict[RedactionAlgorithm, dict[str, frozenset[str]]] = {
    RedactionAlgorithm.V1: {
        "m.room.member": frozenset({"membership"}),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset({"join_rule"}),
        "m.room.power_levels": _POWER_LEVELS_V1,
        "m.room.aliases": frozenset({"aliases"}),
        "m.room.history_visibility": frozenset({"history_visibility"}),
    },
    RedactionAlgorithm.V6: {
        "m.room.member": frozenset({"membership"}),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset({"join_rule"}),
        "m.room.power_levels": _POWER_LEVELS_V1,
        "m.room.history_visibility": frozenset({"history_visibility"}),
    },
    RedactionAlgorithm.V9: {
        "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset({"join_rule", "allow"}),
        "m.room.power_levels": _POWER_LEVELS_V1,
        "m.room.history_visibility": frozenset({"history_visibility"}),
    },
    RedactionAlgorithm.V11: {
        "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
        "m.room.join_rules": frozenset({"join_rule", "allow"}),
        "m.room.power_levels": _POWER_LEVELS_V1 | {"invite"},
        "m.room.history_visibility": frozenset({"history_visibility"}),
        "m.room.redaction": frozenset({"redacts"}),
    },
}

# The keys of a client-format event (ClientEvent) that survive redaction; `unsigned`
# is dropped and left for the caller to rebuild (e.g. with `redacted_because`).
_CLIENT_TOP_LEVEL: frozenset[str] = frozenset(
    {"event_id", "room_id", "sender", "type", "state_key", "origin_server_ts", "content"}
)


def resolve_room_version(room_version: RoomVersion | str) -> RoomVersion:
    """Accept a RoomVersion or its identifier; raise ValueError for unknown versions."""
    if isinstance(room_version, RoomVersion):
        return room_version
    rv = get_room_version(room_version)
    if rv is None:
        raise ValueError(f"unknown room version {room_version!r}")
    return rv


def redact_content(
    event_type: str, content: Mapping[str, Any], room_version: RoomVersion | str
) -> dict[str, Any]:
    """Return the part of ``content`` that the version's redaction algorithm keeps."""
    rv = resolve_room_version(room_version)
    algorithm = rv.redaction
    if not isinstance(content, Mapping):
        return {}
    if algorithm is RedactionAlgorithm.V11 and event_type == "m.room.create":
        return copy.deepcopy(dict(content))

    allowed = _CONTENT_KEYS[algorithm].get(event_type, frozenset())
    kept = {k: copy.deepcopy(v) for k, v in content.items() if k in allowed}

    if algorithm is RedactionAlgorithm.V11 and event_type == "m.room.member":
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping) and "signed" in tpi:
            kept["third_party_invite"] = {"signed": copy.deepcopy(tpi["signed"])}
    return kept


def redact_pdu(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> dict[str, Any]:
    """Return a redacted copy of a PDU (federation format) per the room version.

    Applying it twice gives the same result as applying it once. ``unsigned`` is
    not among the kept keys and is dropped.
    """
    rv = resolve_room_version(room_version)
    top_level = _TOP_LEVEL_V11 if rv.redaction is RedactionAlgorithm.V11 else _TOP_LEVEL_V1
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in pdu.items() if k in top_level}
    event_type = pdu.get("type")
    out["content"] = redact_content(
        event_type if isinstance(event_type, str) else "", pdu.get("content", {}), rv
    )
    return out


def redact_client_event(
    event_dict: Mapping[str, Any], room_version: RoomVersion | str
) -> dict[str, Any]:
    """Redact an event in the client (ClientEvent) shape.

    Keeps ``event_id``, ``room_id``, ``sender``, ``type``, ``state_key`` and
    ``origin_server_ts``, and the content keys the version protects. ``unsigned`` is
    not kept; the caller re-adds what it needs (e.g. ``redacted_because``).
    """
    rv = resolve_room_version(room_version)
    out: dict[str, Any] = {
        k: copy.deepcopy(v) for k, v in event_dict.items() if k in _CLIENT_TOP_LEVEL
    }
    event_type = event_dict.get("type")
    out["content"] = redact_content(
        event_type if isinstance(event_type, str) else "", event_dict.get("content", {}), rv
    )
    return out
