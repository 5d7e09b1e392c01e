"""End-to-end encryption keys: device keys, one-time keys, fallback keys, cross-signing keys
and separately uploaded signatures.

Writes run on the `device_lists` stream's writer (a write that changes what others see of a
user's devices records a stream row in the same transaction); any process reads.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from storage.database import Database, Transaction
from storage.stores.devices import add_device_list_change

JsonDict = dict[str, Any]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class KeyConflict(Exception):
    """A one-time key ID was uploaded before with a different key."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads --------------------------------------------------------------------------

    async def get_device_keys(
        self, user_id: str, device_ids: Collection[str] | None
    ) -> dict[str, JsonDict]:
        """device_id -> its uploaded keys (with the device's display name); all devices
        with keys when `device_ids` is None."""
        rows = await self.db.select(
            "get_device_keys",
            "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k"
            " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
            " WHERE k.user_id = ?",
            (user_id,),
        )
        wanted = None if device_ids is None else set(device_ids)
        out: dict[str, JsonDict] = {}
        for device_id, key_json, display_name in rows:
            if wanted is not None and device_id not in wanted:
                continue
            keys = json.loads(key_json)
            if display_name is not None:
                keys.setdefault("unsigned", {})["device_display_name"] = display_name
            out[device_id] = keys
        return out

    async def get_signatures(self, user_id: str) -> dict[str, dict[str, dict[str, str]]]:
        """target key ID (a device ID or a cross-signing public key) -> signer -> key -> sig."""
        rows = await self.db.select(
            "get_key_signatures",
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures"
            " WHERE target_user_id = ?",
            (user_id,),
        )
        out: dict[str, dict[str, dict[str, str]]] = {}
        for target, signer, key_id, signature in rows:
            out.setdefault(target, {}).setdefault(signer, {})[key_id] = signature
        return out

    async def get_cross_signing_keys(self, user_id: str) -> dict[str, JsonDict]:
        rows = await self.db.select(
            "get_cross_signing_keys",
            "SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = ?",
            (user_id,),
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self.db.select(
            "count_one_time_keys",
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ? AND device_id = ?"
            " GROUP BY algorithm",
            (user_id, device_id),
        )
        return {r[0]: int(r[1]) for r in rows}

    async def counts_for_sync(
        self, user_id: str, device_id: str
    ) -> tuple[dict[str, int], list[str]]:
        """One-time key counts and unused fallback key types, in one round trip."""

        def txn_fn(txn: Transaction) -> tuple[dict[str, int], list[str]]:
            counts = txn.select(
                "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ? AND device_id = ?"
                " GROUP BY algorithm",
                (user_id, device_id),
            )
            fallback = txn.select(
                "SELECT algorithm FROM fallback_keys WHERE user_id = ? AND device_id = ?"
                " AND used = 0 ORDER BY algorithm",
                (user_id, device_id),
            )
            return {r[0]: int(r[1]) for r in counts}, [r[0] for r in fallback]

        return await self.db.run("key_counts_for_sync", txn_fn)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.select(
            "unused_fallback_key_types",
            "SELECT algorithm FROM fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0"
            " ORDER BY algorithm",
            (user_id, device_id),
        )
        return [r[0] for r in rows]

    # -- writes (the device_lists writer) ------------------------------------------------

    async def upload(
        self,
        stream_id: int,
        user_id: str,
        device_id: str,
        device_keys: JsonDict | None,
        one_time_keys: Mapping[str, Any],
        fallback_keys: Mapping[str, Any],
    ) -> tuple[dict[str, int], bool]:
        """Stores the keys of one device in one transaction; returns the device's one-time
        key counts and whether its device keys changed (then a `device_lists` row at
        `stream_id` is written). Raises KeyConflict, storing nothing, when a one-time key
        ID is reused with a different key."""

        def txn_fn(txn: Transaction) -> tuple[dict[str, int], bool]:
            for key_id, key in one_time_keys.items():
                algorithm = key_id.split(":", 1)[0]
                row = txn.select_one(
                    "SELECT key_json FROM one_time_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? AND key_id = ?",
                    (user_id, device_id, algorithm, key_id),
                )
                if row is not None:
                    if row[0] != _canonical(key):
                        raise KeyConflict(key_id)
                    continue
                txn.execute(
                    "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (user_id, device_id, algorithm, key_id, _canonical(key)),
                )
            for key_id, key in fallback_keys.items():
                algorithm = key_id.split(":", 1)[0]
                row = txn.select_one(
                    "SELECT key_id, key_json FROM fallback_keys"
                    " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                    (user_id, device_id, algorithm),
                )
                if row is not None and row[0] == key_id and row[1] == _canonical(key):
                    continue  # the same key again: keep whether it was used
                txn.execute(
                    "INSERT INTO fallback_keys"
                    " (user_id, device_id, algorithm, key_id, key_json, used)"
                    " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm)"
                    " DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,"
                    " used = 0",
                    (user_id, device_id, algorithm, key_id, _canonical(key)),
                )
            changed = False
            if device_keys is not None:
                new = _canonical(device_keys)
                row = txn.select_one(
                    "SELECT key_json FROM device_keys WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                if row is None or row[0] != new:
                    txn.execute(
                        "INSERT INTO device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
                        " ON CONFLICT (user_id, device_id)"
                        " DO UPDATE SET key_json = excluded.key_json",
                        (user_id, device_id, new),
                    )
                    add_device_list_change(txn, stream_id, user_id)
                    changed = True
            counts = txn.select(
                "SELECT algorithm, COUNT(*) FROM one_time_keys"
                " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
                (user_id, device_id),
            )
            return {r[0]: int(r[1]) for r in counts}, changed

        return await self.db.run("upload_keys", txn_fn)

    async def claim(
        self, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, JsonDict | str] | None:
        """Hands out (and deletes) one one-time key of `algorithm`, else the device's fallback
        key of that algorithm (marked used, and kept); None when there is neither."""

        def txn_fn(txn: Transaction) -> tuple[str, Any] | None:
            while True:
                row = txn.select_one(
                    "SELECT key_id, key_json FROM one_time_keys"
                    " WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                    " ORDER BY key_id LIMIT 1",
                    (user_id, device_id, algorithm),
                )
                if row is None:
                    break
                txn.execute(
                    "DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? AND key_id = ?",
                    (user_id, device_id, algorithm, row[0]),
                )
                # A concurrent claim (PostgreSQL) took it first: try the next one.
                if txn.rowcount == 1:
                    return row[0], json.loads(row[1])
            row = txn.select_one(
                "SELECT key_id, key_json FROM fallback_keys"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
            if row is None:
                return None
            txn.execute(
                "UPDATE fallback_keys SET used = 1"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
            return row[0], json.loads(row[1])

        return await self.db.run("claim_one_time_key", txn_fn)

    async def set_cross_signing_keys(
        self, stream_id: int, user_id: str, keys: Mapping[str, JsonDict]
    ) -> None:
        def txn_fn(txn: Transaction) -> None:
            for key_type, key in keys.items():
                txn.execute(
                    "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
                    (user_id, key_type, _canonical(key)),
                )
            add_device_list_change(txn, stream_id, user_id)

        await self.db.run("set_cross_signing_keys", txn_fn)

    async def add_signatures(
        self, stream_id: int, rows: Collection[tuple[str, str, str, str, str]]
    ) -> None:
        """(target_user_id, target_key_id, signer_user_id, signer_key_id, signature) rows; a
        `device_lists` change for every target user."""

        def txn_fn(txn: Transaction) -> None:
            for row in rows:
                txn.execute(
                    "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id,"
                    " signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
                    " DO UPDATE SET signature = excluded.signature",
                    row,
                )
            for target in sorted({r[0] for r in rows}):
                add_device_list_change(txn, stream_id, target)

        await self.db.run("add_key_signatures", txn_fn)
