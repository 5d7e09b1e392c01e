"""Read queries /sync and /messages need beyond EventStore: membership history, state at a
stream position, member summaries. Usable on every process."""

from __future__ import annotations

from collections.abc import Collection

import attrs

from homeserver.events.event import StateKey
from storage.database import Database, Transaction


@attrs.frozen(slots=True)
class StateEntry:
    event_id: str
    stream_ordering: int
    membership: str | None


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


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

    async def get_state_at(self, room_id: str, pos: int) -> dict[StateKey, StateEntry]:
        """The room's state as of stream position `pos`: for each (type, state_key), the
        state event with the highest stream_ordering <= pos. Events of one room are
        persisted in order on one server, so this is the state after its last event <= pos."""
        rows = await self.db.select(
            "sync_state_at",
            "SELECT e.type, e.state_key, e.event_id, e.stream_ordering, e.membership FROM events e"
            " JOIN (SELECT type, state_key, MAX(stream_ordering) AS so FROM events"
            "       WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering <= ?"
            "       GROUP BY type, state_key) latest ON e.stream_ordering = latest.so",
            (room_id, pos),
        )
        return {(r[0], r[1]): StateEntry(r[2], int(r[3]), r[4]) for r in rows}

    async def get_last_event_at(self, room_id: str, pos: int) -> tuple[str, int] | None:
        """(event_id, stream_ordering) of the room's newest event with stream_ordering <= pos."""
        rows = await self.db.select(
            "sync_last_event_at",
            "SELECT event_id, stream_ordering FROM events"
            " WHERE room_id = ? AND stream_ordering <= ? ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, pos),
        )
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
                    f" WHERE event_id IN ({_placeholders(len(chunk))})",
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
