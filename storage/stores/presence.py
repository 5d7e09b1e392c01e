"""Presence: each user's latest state, positioned on the `presence` stream."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from storage.database import Database, Transaction, placeholders


@attrs.frozen(slots=True)
class PresenceRow:
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


_COLUMNS = "user_id, state, status_msg, last_active_ts, stream_id"


def _to_row(r: tuple[Any, ...]) -> PresenceRow:
    return PresenceRow(r[0], r[1], r[2], int(r[3]), int(r[4]))


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        rows = await self.db.select("presence_max_stream_id", "SELECT MAX(stream_id) FROM presence")
        return int(rows[0][0] or 0)

    async def get(self, user_id: str) -> PresenceRow | None:
        rows = await self.db.select(
            "get_presence", f"SELECT {_COLUMNS} FROM presence WHERE user_id = ?", (user_id,)
        )
        return _to_row(rows[0]) if rows else None

    async def put(
        self, stream_id: int, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts, stream_id = excluded.stream_id",
                (user_id, state, status_msg, last_active_ts, stream_id),
            )

        await self.db.run("put_presence", txn_fn)

    async def get_present(self) -> list[PresenceRow]:
        """Every user whose state is online or unavailable."""
        rows = await self.db.select(
            "get_present_users",
            f"SELECT {_COLUMNS} FROM presence WHERE state IN ('online', 'unavailable')",
        )
        return [_to_row(r) for r in rows]

    async def get_changed_users(self, after: int, up_to: int) -> set[str]:
        rows = await self.db.select(
            "get_changed_presence_users",
            "SELECT user_id FROM presence WHERE stream_id > ? AND stream_id <= ?",
            (after, up_to),
        )
        return {r[0] for r in rows}

    async def get_for_users(
        self, user_ids: Collection[str], after: int | None, up_to: int
    ) -> list[PresenceRow]:
        """These users' presence written in (after, up_to] (after None: all up to up_to)."""
        users = list(user_ids)
        if not users:
            return []

        def txn_fn(txn: Transaction) -> list[PresenceRow]:
            out: list[PresenceRow] = []
            for i in range(0, len(users), 500):
                chunk = users[i : i + 500]
                sql = (
                    f"SELECT {_COLUMNS} FROM presence WHERE stream_id <= ?"
                    f" AND user_id IN ({placeholders(len(chunk))})"
                )
                args: list[Any] = [up_to, *chunk]
                if after is not None:
                    sql += " AND stream_id > ?"
                    args.append(after)
                out.extend(_to_row(r) for r in txn.select(sql + " ORDER BY stream_id", args))
            return out

        return await self.db.run("get_presence_for_users", txn_fn)

    async def get_users_sharing_rooms(self, room_ids: Collection[str]) -> set[str]:
        """Everyone joined to any of these rooms."""
        rooms = list(room_ids)
        if not rooms:
            return set()

        def txn_fn(txn: Transaction) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(rooms), 500):
                chunk = rooms[i : i + 500]
                for (user_id,) in txn.select(
                    "SELECT DISTINCT state_key FROM current_state_events"
                    " WHERE type = 'm.room.member' AND membership = 'join'"
                    f" AND room_id IN ({placeholders(len(chunk))})",
                    chunk,
                ):
                    out.add(user_id)
            return out

        return await self.db.run("get_users_sharing_rooms", txn_fn)

    async def get_joined_rooms(self, user_ids: Collection[str]) -> set[str]:
        """The rooms any of these users is joined to."""
        users = list(user_ids)
        if not users:
            return set()

        def txn_fn(txn: Transaction) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(users), 500):
                chunk = users[i : i + 500]
                for (room_id,) in txn.select(
                    "SELECT DISTINCT room_id FROM current_state_events"
                    " WHERE type = 'm.room.member' AND membership = 'join'"
                    f" AND state_key IN ({placeholders(len(chunk))})",
                    chunk,
                ):
                    out.add(room_id)
            return out

        return await self.db.run("get_joined_rooms_of_users", txn_fn)
