"""Serialising events in the client-server format."""

from __future__ import annotations

from typing import Any

from storage.stores.events import PersistedEvent

# Top-level keys of a PDU that clients see.
_CLIENT_KEYS = ("content", "origin_server_ts", "room_id", "sender", "type", "state_key", "redacts")


def serialize_event(
    pe: PersistedEvent, now_ms: int, *, for_device: tuple[str, str] | None = None
) -> dict[str, Any]:
    pdu = pe.event.pdu
    out: dict[str, Any] = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    out["event_id"] = pe.event.event_id
    out["room_id"] = pe.event.room_id
    unsigned: dict[str, Any] = {"age": max(0, now_ms - pe.event.origin_server_ts)}
    if pe.txn is not None and for_device is not None and pe.txn[0:2] == for_device:
        unsigned["transaction_id"] = pe.txn[2]
    if pe.event.type == "m.room.member" and pe.event.membership is not None:
        unsigned["membership"] = pe.event.membership
    out["unsigned"] = unsigned
    return out


# State shown to invitees before they join (stripped state).
_STRIPPED_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


def stripped_state(events: list[PersistedEvent]) -> list[dict[str, Any]]:
    return [
        {
            "type": pe.event.type,
            "state_key": pe.event.state_key,
            "sender": pe.event.sender,
            "content": dict(pe.event.content),
        }
        for pe in events
    ]


def is_stripped_type(event_type: str) -> bool:
    return event_type in _STRIPPED_TYPES
