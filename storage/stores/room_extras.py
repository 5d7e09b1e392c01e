"""Forgotten rooms, content reports and the stream-ordered room reads behind visibility.

The stream-ordered reads answer "what was the room like at stream position P" from the
events table alone: on one server stream order is a topological order of the room DAG,
so the newest state event per (type, state_key) at or before P is the state after P.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Sequence

import attrs

from homeserver.events.event import Event, StateKey
from storage.database import Database, Transaction, placeholders
from storage.stores.event_persist import register_persist_hook

HISTORY_VISIBILITY = "m.room.history_visibility"
MEMBER = "m.room.member"

# (type, state_key or None for "every state_key of this type")
StateFilter = Sequence[tuple[str, str | None]]


@attrs.frozen(slots=True)
class ContentReport:
    report_id: str
    room_id: str
    event_id: str | None
    reporter: str
    reason: str | None
    received_ts: int


@attrs.frozen(slots=True)
class MembershipRow:
    stream_ordering: int
    membership: str
    event_id: str


def state_key_matches(key: StateKey, types: StateFilter | None) -> bool:
    if types is None:
        return True
    return any(key[0] == t and (sk is None or key[1] == sk) for t, sk in types)


@register_persist_hook
def _unforget_on_membership(txn: Transaction, event: Event, stream_ordering: int) -> None:
    # A new membership event for the user brings a forgotten room back.
    if event.type == MEMBER and event.state_key is not None:
        txn.execute(
            "DELETE FROM room_forgotten WHERE user_id = ? AND room_id = ?",
            (event.state_key, event.room_id),
        )


class RoomExtrasStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- forgotten rooms ----------------------------------------------------------------

    async def forget_room(self, user_id: str, room_id: str, now_ms: int) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM room_forgotten WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )
            txn.execute(
                "INSERT INTO room_forgotten (user_id, room_id, forgotten_ts) VALUES (?, ?, ?)",
                (user_id, room_id, now_ms),
            )

        await self.db.run("forget_room", txn_fn)

    async def is_forgotten(self, user_id: str, room_id: str) -> bool:
        rows = await self.db.select(
            "is_forgotten",
            "SELECT 1 FROM room_forgotten WHERE user_id = ? AND room_id = ?",
            (user_id, room_id),
        )
        return bool(rows)

    async def get_forgotten_rooms(self, user_id: str) -> set[str]:
        rows = await self.db.select(
            "get_forgotten_rooms",
            "SELECT room_id FROM room_forgotten WHERE user_id = ?",
            (user_id,),
        )
        return {r[0] for r in rows}

    # -- reports --------------------------------------------------------------------------

    async def add_report(
        self, room_id: str, event_id: str | None, reporter: str, reason: str | None, now_ms: int
    ) -> str:
        report_id = secrets.token_urlsafe(12)
        await self.db.run(
            "add_content_report",
            lambda txn: txn.execute(
                "INSERT INTO content_reports (report_id, room_id, event_id, reporter, reason,"
                " received_ts) VALUES (?, ?, ?, ?, ?, ?)",
                (report_id, room_id, event_id, reporter, reason, now_ms),
            ),
        )
        return report_id

    async def get_reports(self, room_id: str) -> list[ContentReport]:
        rows = await self.db.select(
            "get_content_reports",
            "SELECT report_id, room_id, event_id, reporter, reason, received_ts"
            " FROM content_reports WHERE room_id = ? ORDER BY received_ts, report_id",
            (room_id,),
        )
        return [ContentReport(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    # -- stream-ordered room reads ----------------------------------------------------------

    async def get_user_memberships(self, user_id: str, room_id: str) -> list[MembershipRow]:
        """Every membership event of the user in the room, oldest first."""
        rows = await self.db.select(
            "get_user_room_memberships",
            "SELECT stream_ordering, membership, event_id FROM room_memberships"
            " WHERE user_id = ? AND room_id = ? ORDER BY stream_ordering",
            (user_id, room_id),
        )
        return [MembershipRow(int(r[0]), r[1], r[2]) for r in rows]

    async def get_history_visibility_changes(self, room_id: str) -> list[tuple[int, str | None]]:
        """(stream_ordering, history_visibility value) of every such event, oldest first."""
        rows = await self.db.select(
            "get_history_visibility_changes",
            "SELECT stream_ordering, pdu FROM events WHERE room_id = ? AND type = ?"
            " AND state_key = '' ORDER BY stream_ordering",
            (room_id, HISTORY_VISIBILITY),
        )
        out: list[tuple[int, str | None]] = []
        for pos, pdu in rows:
            content = json.loads(pdu).get("content")
            value = content.get("history_visibility") if isinstance(content, dict) else None
            out.append((int(pos), value if isinstance(value, str) else None))
        return out

    async def get_state_ids_at_stream(
        self, room_id: str, pos: int, types: StateFilter | None = None
    ) -> dict[StateKey, str]:
        """The room's state after stream position `pos` (restricted to `types`)."""
        sql = (
            "SELECT type, state_key, event_id FROM events WHERE room_id = ?"
            " AND state_key IS NOT NULL AND stream_ordering <= ?"
        )
        args: list[object] = [room_id, pos]
        wanted = sorted({t for t, _ in types}) if types is not None else None
        if wanted is not None:
            if not wanted:
                return {}
            sql += f" AND type IN ({placeholders(len(wanted))})"
            args += wanted
        rows = await self.db.select(
            "get_state_ids_at_stream", sql + " ORDER BY stream_ordering", args
        )
        state: dict[StateKey, str] = {}
        for event_type, state_key, event_id in rows:
            key = (event_type, state_key)
            if state_key_matches(key, types):
                state[key] = event_id
        return state

    async def get_latest_event_id_at(self, room_id: str, pos: int) -> str | None:
        """The room's newest event at or before stream position `pos`."""
        rows = await self.db.select(
            "get_latest_event_id_at",
            "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, pos),
        )
        return str(rows[0][0]) if rows else None

    async def get_event_ids_near_timestamp(
        self, room_id: str, ts: int, forwards: bool, limit: int
    ) -> list[tuple[str, int]]:
        """(event_id, origin_server_ts) nearest `ts` in the direction asked, nearest first."""
        if forwards:
            where, order = "origin_server_ts >= ?", "origin_server_ts ASC, stream_ordering ASC"
        else:
            where, order = "origin_server_ts <= ?", "origin_server_ts DESC, stream_ordering DESC"
        rows = await self.db.select(
            "get_event_ids_near_timestamp",
            f"SELECT event_id, origin_server_ts FROM events WHERE room_id = ? AND {where}"
            f" ORDER BY {order} LIMIT ?",
            (room_id, ts, limit),
        )
        return [(r[0], int(r[1])) for r in rows]

    async def get_joined_user_ids(self, room_id: str) -> list[str]:
        rows = await self.db.select(
            "get_joined_user_ids",
            "SELECT state_key FROM current_state_events WHERE room_id = ?"
            " AND type = 'm.room.member' AND membership = 'join' ORDER BY state_key",
            (room_id,),
        )
        return [r[0] for r in rows]

    async def get_current_member_event_ids(
        self, room_id: str, user_ids: Collection[str] | None = None
    ) -> dict[str, str]:
        """user_id -> event ID of their current member event (all members when None)."""
        sql = (
            "SELECT state_key, event_id FROM current_state_events WHERE room_id = ?"
            " AND type = 'm.room.member'"
        )
        args: list[object] = [room_id]
        if user_ids is not None:
            users = list(user_ids)
            if not users:
                return {}
            sql += f" AND state_key IN ({placeholders(len(users))})"
            args += users
        rows = await self.db.select("get_current_member_event_ids", sql, args)
        return {r[0]: r[1] for r in rows}
