"""Account data, global (room_id '') and per room, positioned on the `account_data` stream."""

from __future__ import annotations

import json
from typing import Any

import attrs

from storage.database import Database, Transaction

GLOBAL = ""


@attrs.frozen(slots=True)
class AccountDataRow:
    # None for global account data.
    room_id: str | None
    type: str
    content: dict[str, Any]
    stream_id: int


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        rows = await self.db.select(
            "account_data_max_stream_id", "SELECT MAX(stream_id) FROM account_data"
        )
        return int(rows[0][0] or 0)

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any] | None:
        rows = await self.db.select(
            "get_account_data",
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
            (user_id, room_id or GLOBAL, data_type),
        )
        if not rows:
            return None
        content: dict[str, Any] = json.loads(rows[0][0])
        return content

    async def put(
        self,
        stream_id: int,
        user_id: str,
        room_id: str | None,
        data_type: str,
        content: dict[str, Any],
    ) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, type) DO UPDATE SET"
                " content = excluded.content, stream_id = excluded.stream_id",
                (user_id, room_id or GLOBAL, data_type, json.dumps(content), stream_id),
            )

        await self.db.run("put_account_data", txn_fn)

    async def get_changed_users(self, after: int, up_to: int) -> set[str]:
        rows = await self.db.select(
            "get_changed_account_data_users",
            "SELECT DISTINCT user_id FROM account_data WHERE stream_id > ? AND stream_id <= ?",
            (after, up_to),
        )
        return {r[0] for r in rows}

    async def get_for_user(
        self, user_id: str, after: int | None, up_to: int
    ) -> list[AccountDataRow]:
        """The user's account data written in (after, up_to] (after None: all up to up_to)."""
        sql = (
            "SELECT room_id, type, content, stream_id FROM account_data"
            " WHERE user_id = ? AND stream_id <= ?"
        )
        args: list[Any] = [user_id, up_to]
        if after is not None:
            sql += " AND stream_id > ?"
            args.append(after)
        rows = await self.db.select("get_account_data_for_user", sql + " ORDER BY stream_id", args)
        return [
            AccountDataRow(r[0] if r[0] != GLOBAL else None, r[1], json.loads(r[2]), int(r[3]))
            for r in rows
        ]
