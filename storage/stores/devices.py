"""Devices, and the `device_lists` stream: which users' device lists changed at which position.

Rows of `device_list_changes` are written by the stream's writer only; any process reads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import attrs

from storage.database import Database, Transaction

MEMBER = "m.room.member"


@attrs.frozen(slots=True)
class Device:
    user_id: str
    device_id: str
    display_name: str | None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"device_id": self.device_id}
        if self.display_name is not None:
            out["display_name"] = self.display_name
        return out


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- devices --------------------------------------------------------------------------

    async def get_devices(self, user_id: str) -> list[Device]:
        rows = await self.db.select(
            "get_user_devices",
            "SELECT device_id, display_name FROM devices WHERE user_id = ? ORDER BY device_id",
            (user_id,),
        )
        return [Device(user_id, r[0], r[1]) for r in rows]

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        rows = await self.db.select(
            "get_device",
            "SELECT display_name FROM devices WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return Device(user_id, device_id, rows[0][0]) if rows else None

    async def set_display_name(
        self, stream_id: int, user_id: str, device_id: str, display_name: str
    ) -> bool:
        """False (and nothing written) when the device does not exist."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )
            if txn.rowcount != 1:
                return False
            add_device_list_change(txn, stream_id, user_id)
            return True

        return await self.db.run("set_device_display_name", txn_fn)

    async def delete_devices(
        self, stream_id: int, user_id: str, device_ids: Collection[str]
    ) -> int:
        """Deletes the devices with their access tokens and keys; how many existed."""

        def txn_fn(txn: Transaction) -> int:
            deleted = 0
            for device_id in device_ids:
                args = (user_id, device_id)
                txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", args)
                deleted += max(txn.rowcount, 0)
                for table in ("access_tokens", "device_keys", "one_time_keys", "fallback_keys"):
                    txn.execute(f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?", args)
                txn.execute(
                    "DELETE FROM key_signatures WHERE target_user_id = ? AND target_key_id = ?",
                    args,
                )
            add_device_list_change(txn, stream_id, user_id)
            return deleted

        return await self.db.run("delete_devices", txn_fn)

    # -- the device_lists stream -----------------------------------------------------------

    async def add_change(self, stream_id: int, user_id: str) -> None:
        await self.db.run("add_device_list_change", add_device_list_change, stream_id, user_id)

    async def get_max_stream_id(self) -> int:
        rows = await self.db.select(
            "device_lists_max_stream_id", "SELECT MAX(stream_id) FROM device_list_changes"
        )
        return int(rows[0][0] or 0)

    async def get_changed_users(self, after: int, up_to: int) -> set[str]:
        rows = await self.db.select(
            "get_device_list_changes",
            "SELECT DISTINCT user_id FROM device_list_changes"
            " WHERE stream_id > ? AND stream_id <= ?",
            (after, up_to),
        )
        return {r[0] for r in rows}

    async def get_changed_among(
        self, user_ids: Collection[str], after: int, up_to: int
    ) -> set[str]:
        """Those of `user_ids` whose device lists changed in (after, up_to]."""
        if not user_ids or up_to <= after:
            return set()
        rows = await self.db.select_in(
            "get_device_list_changes_among",
            "SELECT DISTINCT user_id FROM device_list_changes"
            " WHERE stream_id > ? AND stream_id <= ? AND user_id IN ({in})",
            (after, up_to),
            user_ids,
        )
        changed = {r[0] for r in rows}
        return changed

    # -- rooms shared between users (for who sees whose changes) ----------------------------

    async def get_joined_rooms(self, user_id: str) -> set[str]:
        rows = await self.db.select(
            "device_lists_joined_rooms",
            "SELECT room_id FROM current_state_events"
            " WHERE type = ? AND state_key = ? AND membership = 'join'",
            (MEMBER, user_id),
        )
        return {r[0] for r in rows}

    async def get_joined_members(self, room_ids: Iterable[str]) -> set[str]:
        """Every user joined to at least one of the rooms."""
        rows = await self.db.select_in(
            "device_lists_joined_members",
            "SELECT DISTINCT state_key FROM current_state_events"
            " WHERE type = ? AND membership = 'join' AND room_id IN ({in})",
            (MEMBER,),
            room_ids,
        )
        members = {r[0] for r in rows}
        return members

    async def get_membership_changes(
        self, room_ids: Collection[str], after: int, up_to: int
    ) -> list[tuple[str, str, str]]:
        """(room_id, user_id, membership) of the membership events in the rooms whose
        events-stream position is in (after, up_to], oldest first."""
        if not room_ids or up_to <= after:
            return []
        rows = await self.db.select_in(
            "device_lists_membership_changes",
            "SELECT stream_ordering, room_id, user_id, membership FROM room_memberships"
            " WHERE stream_ordering > ? AND stream_ordering <= ? AND room_id IN ({in})",
            (after, up_to),
            room_ids,
        )
        out = [(int(r[0]), r[1], r[2], r[3]) for r in rows]
        out.sort()
        return [(r, u, m) for _, r, u, m in out]

    async def get_own_membership_changes(
        self, user_id: str, after: int, up_to: int
    ) -> list[tuple[str, str]]:
        """(room_id, membership) of `user_id`'s own membership events in (after, up_to]."""
        if up_to <= after:
            return []
        rows = await self.db.select(
            "device_lists_own_membership_changes",
            "SELECT room_id, membership FROM room_memberships"
            " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering",
            (user_id, after, up_to),
        )
        return [(r[0], r[1]) for r in rows]


def add_device_list_change(txn: Transaction, stream_id: int, user_id: str) -> None:
    txn.execute(
        "INSERT INTO device_list_changes (stream_id, user_id) VALUES (?, ?)"
        " ON CONFLICT (stream_id, user_id) DO NOTHING",
        (stream_id, user_id),
    )
