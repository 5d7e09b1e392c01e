"""A read-only view of a Matrix event (a PDU) as the event core sees it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.events.room_versions import RoomVersion

StateKey = tuple[str, str]  # (type, state_key)


class Event:
    """A PDU with its room version and (possibly computed) event ID.

    ``pdu`` is the event's JSON exactly as it would be sent over federation: for room
    versions 3+ it carries no ``event_id`` key, the ID being derived from the reference
    hash. ``rejected`` records the outcome of authorisation where that is known.
    """

    __slots__ = ("pdu", "room_version", "event_id", "rejected")

    def __init__(
        self,
        pdu: Mapping[str, Any],
        room_version: RoomVersion,
        event_id: str,
        rejected: bool = False,
    ) -> None:
        self.pdu: Mapping[str, Any] = pdu
        self.room_version = room_version
        self.event_id = event_id
        self.rejected = rejected

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r}>"

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def room_id(self) -> str:
        room_id = self.pdu.get("room_id")
        if (
            room_id is None
            and self.room_version.room_id_is_create_event_id
            and self.type == "m.room.create"
        ):
            # v12: a create event carries no room_id; the room ID is its event ID with "!".
            return "!" + self.event_id[1:]
        return str(room_id)

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def content(self) -> Mapping[str, Any]:
        content = self.pdu.get("content", {})
        return content if isinstance(content, Mapping) else {}

    @property
    def state_key(self) -> str | None:
        sk = self.pdu.get("state_key")
        return sk if isinstance(sk, str) else None

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def key(self) -> StateKey:
        """The (type, state_key) pair of a state event."""
        sk = self.state_key
        assert sk is not None, "key of a non-state event"
        return (self.type, sk)

    @property
    def depth(self) -> int:
        return int(self.pdu.get("depth", 0))

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu.get("origin_server_ts", 0))

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def redacts(self) -> str | None:
        # v11+ moved `redacts` into content; accept either location for reading.
        r = self.content.get("redacts") if self.room_version.updated_redaction_rules else None
        if r is None:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @staticmethod
    def _ids(refs: Any) -> list[str]:
        # v1–2 events carry [event_id, {hashes}] pairs; v3+ carry bare IDs.
        out: list[str] = []
        for ref in refs or ():
            if isinstance(ref, str):
                out.append(ref)
            elif isinstance(ref, list | tuple) and ref and isinstance(ref[0], str):
                out.append(ref[0])
        return out

    @property
    def prev_event_ids(self) -> list[str]:
        return self._ids(self.pdu.get("prev_events"))

    @property
    def auth_event_ids(self) -> list[str]:
        return self._ids(self.pdu.get("auth_events"))
