"""Serialising events in the client-server format (ClientEvent).

`serialize_event` is the one place that shapes a served event. It is pure: whatever it
needs beyond the event (its redaction, bundled aggregations, the state it replaced, the
requesting user's membership) comes in `EventExtras`, which
`homeserver.handlers.event_serializer.EventSerializer` loads for a batch of events.
"""

from __future__ import annotations

from typing import Any

import attrs

from homeserver.events.redaction import redact_client_event, redact_content
from storage.stores.events import PersistedEvent

# Top-level keys of a PDU that clients see.
_CLIENT_KEYS = ("content", "origin_server_ts", "room_id", "sender", "type", "state_key", "redacts")


@attrs.frozen(slots=True)
class EventExtras:
    """What a served event shows besides its own PDU; every field is optional."""

    # The m.room.redaction event applied to this event, already serialised.
    redacted_because: dict[str, Any] | None = None
    # unsigned["m.relations"]: rel_type -> aggregation.
    relations: dict[str, Any] | None = None
    # For state events: the state event this one replaced.
    replaces_state: PersistedEvent | None = None
    # Whether that replaced event is itself redacted (then its content is served redacted).
    replaced_state_redacted: bool = False
    # The requesting user's membership at this event (MSC4115 / spec v1.11).
    membership: str | None = None


def serialize_event(
    pe: PersistedEvent,
    now_ms: int,
    *,
    for_device: tuple[str, str] | None = None,
    extras: EventExtras | None = None,
) -> dict[str, Any]:
    """The event as a client sees it. `for_device` (user_id, device_id) receives
    `unsigned.transaction_id` when it sent the event."""
    event = pe.event
    pdu = event.pdu
    out: dict[str, Any] = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    out["event_id"] = event.event_id
    out["room_id"] = event.room_id
    if extras is not None and extras.redacted_because is not None:
        out = redact_client_event(out, event.room_version)
    unsigned: dict[str, Any] = {"age": max(0, now_ms - event.origin_server_ts)}
    if pe.txn is not None and for_device is not None and pe.txn[0:2] == for_device:
        unsigned["transaction_id"] = pe.txn[2]
    if extras is not None:
        if extras.redacted_because is not None:
            unsigned["redacted_because"] = extras.redacted_because
        if extras.relations:
            unsigned["m.relations"] = extras.relations
        replaced = extras.replaces_state
        if replaced is not None and event.state_key is not None:
            unsigned["replaces_state"] = replaced.event.event_id
            unsigned["prev_sender"] = replaced.event.sender
            prev_content = dict(replaced.event.content)
            if extras.replaced_state_redacted:
                prev_content = redact_content(
                    replaced.event.type, prev_content, replaced.event.room_version
                )
            unsigned["prev_content"] = prev_content
        if extras.membership is not None:
            unsigned["membership"] = extras.membership
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
