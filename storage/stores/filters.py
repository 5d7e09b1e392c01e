"""Users' stored filters (POST/GET /user/{userId}/filter)."""

from __future__ import annotations

from storage.database import Database


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_filter_json(self, user_id: str, filter_id: str) -> str | None:
        rows = await self.db.select(
            "get_user_filter",
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
            (user_id, filter_id),
        )
        return str(rows[0][0]) if rows else None

    async def add_filter(self, user_id: str, filter_id: str, filter_json: str, now_ms: int) -> None:
        """Stores the filter; a second upload of the same filter (same ID) is a no-op."""
        await self.db.run(
            "add_user_filter",
            lambda txn: txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json, created_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, filter_id) DO NOTHING",
                (user_id, filter_id, filter_json, now_ms),
            ),
        )
