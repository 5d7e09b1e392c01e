"""Read-side queries over events, room state and memberships; usable on every process."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import attrs

from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import get_room_version
from storage.database import Database, Transaction, placeholders

_EVENT_COLUMNS = (
    "e.stream_ordering, e.event_id, e.pdu, r.room_version, e.txn_user_id, e.txn_device_id, e.txn_id"
)
_EVENT_FROM = "events e JOIN rooms r ON r.room_id = e.room_id"


@attrs.frozen(slots=True)
class PersistedEvent:
    event: Event
    stream_ordering: int
    # (user_id, device_id, txn_id) of the client request that sent it, if any.
    txn: tuple[str, str, str] | None = None


@attrs.frozen(slots=True)
class StreamRow:
    """What the notifier needs to know about one event on the events stream."""

    stream_ordering: int
    room_id: str
    type: str
    state_key: str | None
    membership: str | None


def _to_persisted(row: tuple[Any, ...]) -> PersistedEvent:
    stream_ordering, event_id, pdu_json, room_version, t_user, t_device, t_id = row
    version = get_room_version(room_version)
    assert version is not None, f"unknown room version {room_version!r} in database"
    pdu = json.loads(pdu_json)
    txn = (t_user, t_device, t_id) if t_id is not None else None
    return PersistedEvent(Event(pdu, version, event_id), int(stream_ordering), txn)


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._room_versions: dict[str, str] = {}

    async def get_max_stream_ordering(self) -> int:
        rows = await self.db.select(
            "get_max_stream_ordering", "SELECT MAX(stream_ordering) FROM events"
        )
        return int(rows[0][0] or 0)

    async def get_room_version(self, room_id: str) -> str | None:
        cached = self._room_versions.get(room_id)
        if cached is not None:
            return cached
        rows = await self.db.select(
            "get_room_version", "SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)
        )
        if not rows:
            return None
        self._room_versions[room_id] = rows[0][0]
        return str(rows[0][0])

    async def get_event(self, event_id: str) -> PersistedEvent | None:
        events = await self.get_events([event_id])
        return events.get(event_id)

    async def get_events(self, event_ids: Collection[str]) -> dict[str, PersistedEvent]:
        if not event_ids:
            return {}
        return await self.db.run("get_events", self._get_events_txn, list(event_ids))

    @staticmethod
    def _get_events_txn(txn: Transaction, event_ids: list[str]) -> dict[str, PersistedEvent]:
        out: dict[str, PersistedEvent] = {}
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i : i + 500]
            for row in txn.select(
                f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
                f" WHERE e.event_id IN ({placeholders(len(chunk))})",
                chunk,
            ):
                pe = _to_persisted(row)
                out[pe.event.event_id] = pe
        return out

    async def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        rows = await self.db.select(
            "get_current_state_ids",
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
            (room_id,),
        )
        return {(t, sk): eid for t, sk, eid in rows}

    async def get_current_state(self, room_id: str) -> dict[StateKey, PersistedEvent]:
        ids = await self.get_current_state_ids(room_id)
        events = await self.get_events(list(ids.values()))
        return {k: events[eid] for k, eid in ids.items() if eid in events}

    async def get_current_state_event(
        self, room_id: str, event_type: str, state_key: str
    ) -> PersistedEvent | None:
        rows = await self.db.select(
            "get_current_state_event",
            "SELECT event_id FROM current_state_events"
            " WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, event_type, state_key),
        )
        return await self.get_event(rows[0][0]) if rows else None

    async def get_forward_extremities(self, room_id: str) -> list[tuple[str, int]]:
        """(event_id, depth) of each forward extremity of the room."""
        rows = await self.db.select(
            "get_forward_extremities",
            "SELECT f.event_id, e.depth FROM forward_extremities f"
            " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?",
            (room_id,),
        )
        return [(r[0], int(r[1])) for r in rows]

    async def get_rooms_for_user(self, user_id: str) -> dict[str, str]:
        """room_id -> current membership, for every room the user has a membership in."""
        rows = await self.db.select(
            "get_rooms_for_user",
            "SELECT room_id, membership FROM current_state_events"
            " WHERE type = 'm.room.member' AND state_key = ?",
            (user_id,),
        )
        return {r[0]: r[1] for r in rows}

    async def get_membership_at(
        self, user_id: str, room_ids: Iterable[str], pos: int
    ) -> dict[str, str]:
        """Each room's membership of the user as of stream position `pos`."""
        room_list = list(room_ids)
        if not room_list:
            return {}

        def txn_fn(txn: Transaction) -> dict[str, str]:
            out: dict[str, str] = {}
            for row in txn.select(
                "SELECT room_id, membership, stream_ordering FROM room_memberships"
                " WHERE user_id = ? AND stream_ordering <= ?"
                f" AND room_id IN ({placeholders(len(room_list))})"
                " ORDER BY stream_ordering",
                [user_id, pos, *room_list],
            ):
                out[row[0]] = row[1]
            return out

        return await self.db.run("get_membership_at", txn_fn)

    async def get_membership_changes(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[tuple[str, str, int]]:
        """(room_id, membership, stream_ordering) for the user's membership events in (from, to]."""
        rows = await self.db.select(
            "get_membership_changes",
            "SELECT room_id, membership, stream_ordering FROM room_memberships"
            " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering",
            (user_id, from_pos, to_pos),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def get_room_events_backwards(
        self, room_id: str, before_or_at: int, after: int, limit: int
    ) -> list[PersistedEvent]:
        """Up to `limit` events with after < stream_ordering <= before_or_at, newest first."""
        rows = await self.db.select(
            "get_room_events_backwards",
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
            " WHERE e.room_id = ? AND e.stream_ordering <= ? AND e.stream_ordering > ?"
            " ORDER BY e.stream_ordering DESC LIMIT ?",
            (room_id, before_or_at, after, limit),
        )
        return [_to_persisted(r) for r in rows]

    async def get_room_events_backwards_many(
        self, wanted: Sequence[tuple[str, int, int, int]]
    ) -> list[list[PersistedEvent]]:
        """`get_room_events_backwards` for each (room_id, before_or_at, after, limit), in one
        transaction (one hand-off to the database thread for many rooms)."""
        if not wanted:
            return []

        def txn_fn(txn: Transaction) -> list[list[tuple[Any, ...]]]:
            return [
                txn.select(
                    f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
                    " WHERE e.room_id = ? AND e.stream_ordering <= ? AND e.stream_ordering > ?"
                    " ORDER BY e.stream_ordering DESC LIMIT ?",
                    args,
                )
                for args in wanted
            ]

        batches = await self.db.run("get_room_events_backwards_many", txn_fn)
        return [[_to_persisted(r) for r in rows] for rows in batches]

    async def get_room_events_forwards(
        self, room_id: str, after: int, up_to: int, limit: int
    ) -> list[PersistedEvent]:
        rows = await self.db.select(
            "get_room_events_forwards",
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
            " WHERE e.room_id = ? AND e.stream_ordering > ? AND e.stream_ordering <= ?"
            " ORDER BY e.stream_ordering ASC LIMIT ?",
            (room_id, after, up_to, limit),
        )
        return [_to_persisted(r) for r in rows]

    async def get_state_events_between(
        self, room_id: str, after: int, up_to: int
    ) -> list[PersistedEvent]:
        """State events sent into the room in (after, up_to], oldest first."""
        rows = await self.db.select(
            "get_state_events_between",
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}"
            " WHERE e.room_id = ? AND e.stream_ordering > ? AND e.stream_ordering <= ?"
            " AND e.state_key IS NOT NULL ORDER BY e.stream_ordering ASC",
            (room_id, after, up_to),
        )
        return [_to_persisted(r) for r in rows]

    async def get_rooms_changed(
        self, room_ids: Collection[str], after: int, up_to: int
    ) -> set[str]:
        """Which of these rooms have events in (after, up_to]."""
        if not room_ids or up_to <= after:
            return set()
        room_list = list(room_ids)

        def txn_fn(txn: Transaction) -> set[str]:
            changed: set[str] = set()
            for i in range(0, len(room_list), 500):
                chunk = room_list[i : i + 500]
                for (rid,) in txn.select(
                    "SELECT DISTINCT room_id FROM events"
                    " WHERE stream_ordering > ? AND stream_ordering <= ?"
                    f" AND room_id IN ({placeholders(len(chunk))})",
                    [after, up_to, *chunk],
                ):
                    changed.add(rid)
            return changed

        return await self.db.run("get_rooms_changed", txn_fn)

    async def get_stream_rows(self, after: int, up_to: int, limit: int = 10_000) -> list[StreamRow]:
        rows = await self.db.select(
            "get_stream_rows",
            "SELECT stream_ordering, room_id, type, state_key, membership FROM events"
            " WHERE stream_ordering > ? AND stream_ordering <= ? ORDER BY stream_ordering LIMIT ?",
            (after, up_to, limit),
        )
        return [StreamRow(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    async def get_event_id_for_txn(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        rows = await self.db.select(
            "get_event_id_for_txn",
            "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND txn_id = ?",
            (user_id, device_id, txn_id),
        )
        return rows[0][0] if rows else None
