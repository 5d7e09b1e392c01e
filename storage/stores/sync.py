"""Read queries /sync and /messages need beyond EventStore: membership history, state at a
stream position, member summaries. Usable on every process."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

import attrs

from homeserver.events.event import StateKey
from storage.database import Database, Transaction, placeholders


@attrs.frozen(slots=True)
class StateEntry:
    event_id: str
    stream_ordering: int
    membership: str | None


@attrs.frozen(slots=True)
class UserMembership:
    """One membership event of a user (a row of room_memberships)."""

    room_id: str
    membership: str
    stream_ordering: int
    event_id: str


# Rooms (or events) per `IN (...)` list: well inside SQLite's and PostgreSQL's limits.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


_STATE_AT_SQL = (
    "SELECT e.type, e.state_key, e.event_id, e.stream_ordering, e.membership FROM events e"
    " JOIN (SELECT type, state_key, MAX(stream_ordering) AS so FROM events"
    "       WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering <= ?"
    "       GROUP BY type, state_key) latest ON e.stream_ordering = latest.so"
)
_LAST_EVENT_AT_SQL = (
    "SELECT event_id, stream_ordering FROM events"
    " WHERE room_id = ? AND stream_ordering <= ? ORDER BY stream_ordering DESC LIMIT 1"
)


class SyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_membership_history(self, user_id: str, up_to: int) -> list[tuple[str, str, int]]:
        """(room_id, membership, stream_ordering) of every membership event of the user with
        stream_ordering <= up_to, oldest first."""
        rows = await self.db.select(
            "sync_membership_history",
            "SELECT room_id, membership, stream_ordering FROM room_memberships"
            " WHERE user_id = ? AND stream_ordering <= ? ORDER BY stream_ordering",
            (user_id, up_to),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def get_user_memberships(self, user_id: str) -> list[UserMembership]:
        """Every membership event of the user, in every room, oldest first (the source of
        the membership cache: positions are filtered by the reader)."""
        rows = await self.db.select(
            "sync_user_memberships",
            "SELECT room_id, membership, stream_ordering, event_id FROM room_memberships"
            " WHERE user_id = ? ORDER BY stream_ordering",
            (user_id,),
        )
        return [UserMembership(r[0], r[1], int(r[2]), r[3]) for r in rows]

    async def get_user_memberships_in_rooms(
        self, user_id: str, room_ids: Collection[str]
    ) -> dict[str, list[UserMembership]]:
        """room_id -> the user's membership events there, oldest first (rooms without any
        are left out). One transaction for all the rooms."""
        rooms = sorted(set(room_ids))
        if not rooms:
            return {}

        def txn_fn(txn: Transaction) -> dict[str, list[UserMembership]]:
            out: dict[str, list[UserMembership]] = {}
            for chunk in _chunks(rooms):
                for room_id, membership, pos, event_id in txn.select(
                    "SELECT room_id, membership, stream_ordering, event_id FROM room_memberships"
                    f" WHERE user_id = ? AND room_id IN ({placeholders(len(chunk))})"
                    " ORDER BY stream_ordering",
                    [user_id, *chunk],
                ):
                    out.setdefault(room_id, []).append(
                        UserMembership(room_id, membership, int(pos), event_id)
                    )
            return out

        return await self.db.run("sync_user_memberships_in_rooms", txn_fn)

    async def get_history_visibility_changes_many(
        self, room_ids: Collection[str]
    ) -> dict[str, list[tuple[int, str | None]]]:
        """room_id -> (stream_ordering, history_visibility value) of each of its
        m.room.history_visibility events, oldest first; every asked room is present."""
        rooms = sorted(set(room_ids))
        out: dict[str, list[tuple[int, str | None]]] = {room_id: [] for room_id in rooms}
        if not rooms:
            return out

        def txn_fn(txn: Transaction) -> list[tuple[str, int, str]]:
            found: list[tuple[str, int, str]] = []
            for chunk in _chunks(rooms):
                found += txn.select(
                    "SELECT room_id, stream_ordering, pdu FROM events"
                    f" WHERE room_id IN ({placeholders(len(chunk))})"
                    " AND type = 'm.room.history_visibility' AND state_key = ''"
                    " ORDER BY stream_ordering",
                    chunk,
                )
            return found

        for room_id, pos, pdu in await self.db.run("sync_history_visibility_many", txn_fn):
            content = json.loads(pdu).get("content")
            value = content.get("history_visibility") if isinstance(content, dict) else None
            out[room_id].append((int(pos), value if isinstance(value, str) else None))
        return out

    async def get_state_at(self, room_id: str, pos: int) -> dict[StateKey, StateEntry]:
        """The room's state as of stream position `pos`: for each (type, state_key), the
        state event with the highest stream_ordering <= pos. Events of one room are
        persisted in order on one server, so this is the state after its last event <= pos."""
        rows = await self.db.select("sync_state_at", _STATE_AT_SQL, (room_id, pos))
        return {(r[0], r[1]): StateEntry(r[2], int(r[3]), r[4]) for r in rows}

    async def get_state_at_many(
        self, wanted: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], dict[StateKey, StateEntry]]:
        """`get_state_at` for each (room_id, pos), in one transaction."""
        keys = list(dict.fromkeys(wanted))
        if not keys:
            return {}

        def txn_fn(txn: Transaction) -> dict[tuple[str, int], dict[StateKey, StateEntry]]:
            out: dict[tuple[str, int], dict[StateKey, StateEntry]] = {}
            for room_id, pos in keys:
                rows = txn.select(_STATE_AT_SQL, (room_id, pos))
                out[(room_id, pos)] = {
                    (r[0], r[1]): StateEntry(r[2], int(r[3]), r[4]) for r in rows
                }
            return out

        return await self.db.run("sync_state_at_many", txn_fn)

    async def get_last_events_at_many(
        self, wanted: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[str, int]]:
        """`get_last_event_at` for each (room_id, pos), in one transaction; pairs with no
        event at or before pos are left out."""
        keys = list(dict.fromkeys(wanted))
        if not keys:
            return {}

        def txn_fn(txn: Transaction) -> dict[tuple[str, int], tuple[str, int]]:
            out: dict[tuple[str, int], tuple[str, int]] = {}
            for room_id, pos in keys:
                row = txn.select_one(_LAST_EVENT_AT_SQL, (room_id, pos))
                if row is not None:
                    out[(room_id, pos)] = (row[0], int(row[1]))
            return out

        return await self.db.run("sync_last_events_at_many", txn_fn)

    async def get_last_event_at(self, room_id: str, pos: int) -> tuple[str, int] | None:
        """(event_id, stream_ordering) of the room's newest event with stream_ordering <= pos."""
        rows = await self.db.select("sync_last_event_at", _LAST_EVENT_AT_SQL, (room_id, pos))
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def get_state_entries(self, event_ids: Collection[str]) -> dict[str, StateEntry]:
        if not event_ids:
            return {}
        ids = list(event_ids)

        def txn_fn(txn: Transaction) -> dict[str, StateEntry]:
            out: dict[str, StateEntry] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                for eid, so, membership in txn.select(
                    "SELECT event_id, stream_ordering, membership FROM events"
                    f" WHERE event_id IN ({placeholders(len(chunk))})",
                    chunk,
                ):
                    out[eid] = StateEntry(eid, int(so), membership)
            return out

        return await self.db.run("sync_state_entries", txn_fn)

    async def has_member_events_between(self, room_id: str, after: int, up_to: int) -> bool:
        rows = await self.db.select(
            "sync_member_events_between",
            "SELECT 1 FROM events WHERE room_id = ? AND type = 'm.room.member'"
            " AND stream_ordering > ? AND stream_ordering <= ? LIMIT 1",
            (room_id, after, up_to),
        )
        return bool(rows)
