"""Room aliases and the published room directory: SQL only; readable on every process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from storage.database import Database, Transaction

# The state (all with state_key "") a published room directory entry is made from.
DIRECTORY_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)


@attrs.frozen(slots=True)
class AliasRecord:
    room_alias: str
    room_id: str
    creator: str


@attrs.frozen(slots=True)
class PublishedRoom:
    """What the directory lists about one published room."""

    room_id: str
    num_joined_members: int
    # event type -> content of the current state event of that type (state_key "").
    state: Mapping[str, Mapping[str, Any]]


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- aliases --------------------------------------------------------------------------

    async def get_alias(self, room_alias: str) -> AliasRecord | None:
        rows = await self.db.select(
            "get_room_alias",
            "SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = ?",
            (room_alias,),
        )
        return AliasRecord(*rows[0]) if rows else None

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.select(
            "get_aliases_for_room",
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY created_ts, room_alias",
            (room_id,),
        )
        return [r[0] for r in rows]

    async def create_alias(self, room_alias: str, room_id: str, creator: str, now_ms: int) -> bool:
        """Maps the alias to the room; False (and nothing written) if the alias exists."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts)"
                " SELECT ?, ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM room_aliases WHERE room_alias = ?)",
                (room_alias, room_id, creator, now_ms, room_alias),
            )
            return txn.rowcount == 1

        return await self.db.run("create_room_alias", txn_fn)

    async def move_aliases(self, from_room_id: str, to_room_id: str) -> list[str]:
        """Points every alias of one room at another (a room upgrade); returns them."""

        def txn_fn(txn: Transaction) -> list[str]:
            moved = [
                r[0]
                for r in txn.select(
                    "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias",
                    (from_room_id,),
                )
            ]
            txn.execute(
                "UPDATE room_aliases SET room_id = ? WHERE room_id = ?", (to_room_id, from_room_id)
            )
            return moved

        return await self.db.run("move_room_aliases", txn_fn)

    async def delete_alias(self, room_alias: str) -> bool:
        def txn_fn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (room_alias,))
            return txn.rowcount > 0

        return await self.db.run("delete_room_alias", txn_fn)

    # -- the published room directory ------------------------------------------------------

    async def get_room_published(self, room_id: str) -> bool | None:
        """Whether the room is published; None for a room this server does not know."""
        rows = await self.db.select(
            "get_room_published", "SELECT is_public FROM rooms WHERE room_id = ?", (room_id,)
        )
        return bool(rows[0][0]) if rows else None

    async def set_room_published(self, room_id: str, published: bool) -> bool:
        """False if the room is unknown."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE rooms SET is_public = ? WHERE room_id = ?", (1 if published else 0, room_id)
            )
            return txn.rowcount > 0

        return await self.db.run("set_room_published", txn_fn)

    async def get_published_rooms(self) -> list[PublishedRoom]:
        """Every published room with its joined member count and directory state."""
        return await self.db.run("get_published_rooms", self._published_rooms_txn)

    @staticmethod
    def _published_rooms_txn(txn: Transaction) -> list[PublishedRoom]:
        room_ids = [r[0] for r in txn.select("SELECT room_id FROM rooms WHERE is_public = 1")]
        if not room_ids:
            return []
        joined = dict(
            txn.select(
                "SELECT c.room_id, COUNT(*) FROM current_state_events c"
                " JOIN rooms r ON r.room_id = c.room_id"
                " WHERE r.is_public = 1 AND c.type = 'm.room.member' AND c.membership = 'join'"
                " GROUP BY c.room_id"
            )
        )
        types = ",".join("?" * len(DIRECTORY_STATE_TYPES))
        state: dict[str, dict[str, Mapping[str, Any]]] = {}
        for room_id, event_type, pdu in txn.select(
            "SELECT c.room_id, c.type, e.pdu FROM current_state_events c"
            " JOIN rooms r ON r.room_id = c.room_id"
            " JOIN events e ON e.event_id = c.event_id"
            f" WHERE r.is_public = 1 AND c.state_key = '' AND c.type IN ({types})",
            DIRECTORY_STATE_TYPES,
        ):
            content = json.loads(pdu).get("content")
            if isinstance(content, dict):
                state.setdefault(room_id, {})[event_type] = content
        return [
            PublishedRoom(room_id, int(joined.get(room_id, 0)), state.get(room_id, {}))
            for room_id in room_ids
        ]
