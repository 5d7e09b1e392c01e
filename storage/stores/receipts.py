"""Read receipts: the latest receipt per (room, type, user, thread), positioned on `receipts`."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import attrs

from storage.database import Database, Transaction, placeholders

PRIVATE_READ = "m.read.private"
# thread_id column value of an unthreaded receipt.
UNTHREADED = ""


@attrs.frozen(slots=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    # {"ts": ..., "thread_id": ...} as clients see it.
    data: dict[str, Any]
    stream_id: int


_COLUMNS = "room_id, receipt_type, user_id, event_id, data, stream_id"


def _to_receipt(row: tuple[Any, ...]) -> Receipt:
    return Receipt(row[0], row[1], row[2], row[3], json.loads(row[4]), int(row[5]))


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        rows = await self.db.select("receipts_max_stream_id", "SELECT MAX(stream_id) FROM receipts")
        return int(rows[0][0] or 0)

    async def get_event_stream_ordering(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str
    ) -> int | None:
        """The events-stream position of the event the current receipt points at."""
        rows = await self.db.select(
            "get_receipt_position",
            "SELECT event_stream_ordering FROM receipts"
            " WHERE room_id = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
            (room_id, receipt_type, user_id, thread_id),
        )
        return int(rows[0][0]) if rows else None

    async def upsert(
        self,
        stream_id: int,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        event_stream_ordering: int,
        data: dict[str, Any],
    ) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
                " event_stream_ordering, data, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id,"
                " event_stream_ordering = excluded.event_stream_ordering,"
                " data = excluded.data, stream_id = excluded.stream_id",
                (
                    room_id,
                    receipt_type,
                    user_id,
                    thread_id,
                    event_id,
                    event_stream_ordering,
                    json.dumps(data),
                    stream_id,
                ),
            )

        await self.db.run("upsert_receipt", txn_fn)

    async def get_changed(self, after: int, up_to: int) -> list[tuple[str, str, str]]:
        """(room_id, receipt_type, user_id) of the receipts written in (after, up_to]."""
        rows = await self.db.select(
            "get_changed_receipts",
            "SELECT room_id, receipt_type, user_id FROM receipts"
            " WHERE stream_id > ? AND stream_id <= ?",
            (after, up_to),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def get_for_rooms(
        self, room_ids: Collection[str], viewer: str, after: int | None, up_to: int
    ) -> list[Receipt]:
        """Receipts in these rooms at positions (after, up_to] (after None: all up to up_to).

        Private read receipts appear only to their own user.
        """
        room_list = list(room_ids)
        if not room_list:
            return []

        def txn_fn(txn: Transaction) -> list[Receipt]:
            out: list[Receipt] = []
            for i in range(0, len(room_list), 500):
                chunk = room_list[i : i + 500]
                args: list[Any] = [up_to, PRIVATE_READ, viewer, *chunk]
                sql = (
                    f"SELECT {_COLUMNS} FROM receipts WHERE stream_id <= ?"
                    " AND (receipt_type <> ? OR user_id = ?)"
                    f" AND room_id IN ({placeholders(len(chunk))})"
                )
                if after is not None:
                    sql += " AND stream_id > ?"
                    args.append(after)
                out.extend(_to_receipt(r) for r in txn.select(sql + " ORDER BY stream_id", args))
            return out

        return await self.db.run("get_receipts_for_rooms", txn_fn)
