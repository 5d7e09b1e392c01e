"""Reserved position ranges of in-memory streams (see migration 0008)."""

from __future__ import annotations

from storage.database import Database


class HighWaterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, stream: str) -> int:
        rows = await self.db.select(
            "get_stream_high_water",
            "SELECT position FROM stream_high_water WHERE stream = ?",
            (stream,),
        )
        return int(rows[0][0]) if rows else 0

    async def raise_to(self, stream: str, position: int) -> None:
        """Never lowers the stored mark, whatever order concurrent calls commit in."""
        await self.db.run(
            "raise_stream_high_water",
            lambda txn: txn.execute(
                "INSERT INTO stream_high_water (stream, position) VALUES (?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET position = CASE"
                " WHEN excluded.position > stream_high_water.position THEN excluded.position"
                " ELSE stream_high_water.position END",
                (stream, position),
            ),
        )
