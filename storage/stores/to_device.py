"""Send-to-device messages: a per-device queue positioned on the `to_device` stream.

Messages stay until the device acknowledges them by syncing with a later `since`; the
writer inserts, any process may delete what its device has acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from storage.database import Database, Transaction


@attrs.frozen(slots=True)
class ToDeviceMessage:
    stream_id: int
    sender: str
    type: str
    content: dict[str, Any]

    def to_event(self) -> dict[str, Any]:
        return {"sender": self.sender, "type": self.type, "content": self.content}


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_max_stream_id(self) -> int:
        rows = await self.db.select(
            "to_device_max_stream_id", "SELECT MAX(stream_id) FROM device_inbox"
        )
        return int(rows[0][0] or 0)

    async def get_devices(self, user_id: str) -> list[str]:
        rows = await self.db.select(
            "to_device_get_devices", "SELECT device_id FROM devices WHERE user_id = ?", (user_id,)
        )
        return [r[0] for r in rows]

    async def add_messages(
        self,
        stream_id: int,
        sender: str,
        sender_device: str,
        txn_id: str,
        event_type: str,
        messages: Iterable[tuple[str, str, dict[str, Any]]],
        now_ms: int,
    ) -> bool:
        """Queues (user_id, device_id, content) messages; False when `txn_id` was seen before."""
        rows = [(u, d, stream_id, sender, event_type, json.dumps(c)) for u, d, c in messages]

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id, inserted_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                (sender, sender_device, txn_id, now_ms),
            )
            if txn.rowcount != 1:
                return False
            txn.execute_many(
                "INSERT INTO device_inbox (user_id, device_id, stream_id, sender, type, content)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return True

        return await self.db.run("add_to_device_messages", txn_fn)

    async def get_changed_users(self, after: int, up_to: int) -> set[str]:
        rows = await self.db.select(
            "get_changed_to_device_users",
            "SELECT DISTINCT user_id FROM device_inbox WHERE stream_id > ? AND stream_id <= ?",
            (after, up_to),
        )
        return {r[0] for r in rows}

    async def acknowledge(self, user_id: str, device_id: str, since: int) -> None:
        """The device has the response whose token carried `since`: drop what it delivered."""

        def txn_fn(txn: Transaction) -> None:
            row = txn.select_one(
                "SELECT delivered_up_to FROM device_inbox_partial"
                " WHERE user_id = ? AND device_id = ? AND since_pos = ?",
                (user_id, device_id, since),
            )
            delivered = int(row[0]) if row else since
            txn.execute(
                "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
                (user_id, device_id, delivered),
            )
            txn.execute(
                "DELETE FROM device_inbox_partial"
                " WHERE user_id = ? AND device_id = ? AND since_pos < ?",
                (user_id, device_id, since),
            )

        await self.db.run("acknowledge_to_device", txn_fn)

    async def get_pending(
        self, user_id: str, device_id: str, up_to: int, limit: int
    ) -> list[ToDeviceMessage]:
        rows = await self.db.select(
            "get_pending_to_device",
            "SELECT stream_id, sender, type, content FROM device_inbox"
            " WHERE user_id = ? AND device_id = ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
            (user_id, device_id, up_to, limit),
        )
        return [ToDeviceMessage(int(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]

    async def record_delivery(
        self, user_id: str, device_id: str, since_pos: int, delivered_up_to: int | None
    ) -> None:
        """A response whose token carries `since_pos` delivered the queue up to
        `delivered_up_to` (None: everything up to `since_pos`)."""

        def txn_fn(txn: Transaction) -> None:
            if delivered_up_to is None:
                txn.execute(
                    "DELETE FROM device_inbox_partial"
                    " WHERE user_id = ? AND device_id = ? AND since_pos = ?",
                    (user_id, device_id, since_pos),
                )
                return
            txn.execute(
                "INSERT INTO device_inbox_partial (user_id, device_id, since_pos, delivered_up_to)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id, since_pos) DO UPDATE SET"
                " delivered_up_to = excluded.delivered_up_to",
                (user_id, device_id, since_pos, delivered_up_to),
            )

        await self.db.run("record_to_device_delivery", txn_fn)
