"""Users, devices and access tokens."""

from __future__ import annotations

from collections.abc import Collection

import attrs

from storage.database import Database, Transaction

# User IDs per IN (...) query: well under SQLite's bound-parameter limit.
_BATCH = 500


@attrs.frozen(slots=True)
class TokenInfo:
    user_id: str
    device_id: str
    token: str
    is_guest: bool = False


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads (any process) ------------------------------------------------------------

    async def get_user(self, user_id: str) -> tuple[str | None, bool, bool] | None:
        """(password_hash, admin, deactivated) or None."""
        rows = await self.db.select(
            "get_user",
            "SELECT password_hash, admin, deactivated FROM users WHERE user_id = ?",
            (user_id,),
        )
        if not rows:
            return None
        pw, admin, deactivated = rows[0]
        return pw, bool(admin), bool(deactivated)

    async def get_token(self, token: str) -> TokenInfo | None:
        rows = await self.db.select(
            "get_token",
            "SELECT t.user_id, t.device_id, u.is_guest FROM access_tokens t"
            " JOIN users u ON u.user_id = t.user_id WHERE t.token = ? AND u.deactivated = 0",
            (token,),
        )
        if not rows:
            return None
        user_id, device_id, is_guest = rows[0]
        return TokenInfo(user_id=user_id, device_id=device_id, token=token, is_guest=bool(is_guest))

    async def get_guests(self, user_ids: Collection[str]) -> set[str]:
        """Which of `user_ids` are guest accounts."""
        found: set[str] = set()
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            rows = await self.db.select(
                "get_guests",
                "SELECT user_id FROM users WHERE is_guest = 1 AND user_id IN ("
                + ", ".join("?" for _ in batch)
                + ")",
                tuple(batch),
            )
            found.update(row[0] for row in rows)
        return found

    # -- writes (main only) -------------------------------------------------------------

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, admin: bool = False
    ) -> bool:
        """Returns False when the user ID is taken."""
        return await self._insert_user("create_user", user_id, password_hash, now_ms, admin, False)

    async def create_guest(self, user_id: str, now_ms: int) -> bool:
        """A guest account (no password); False when the user ID is taken."""
        return await self._insert_user("create_guest", user_id, None, now_ms, False, True)

    async def _insert_user(
        self,
        name: str,
        user_id: str,
        password_hash: str | None,
        now_ms: int,
        admin: bool,
        guest: bool,
    ) -> bool:
        def txn_fn(txn: Transaction) -> bool:
            # One atomic statement: a check-then-insert races with a concurrent registration
            # of the same ID on PostgreSQL (unique violation instead of False).
            txn.execute(
                "INSERT INTO users (user_id, password_hash, creation_ts, admin, is_guest)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, now_ms, 1 if admin else 0, 1 if guest else 0),
            )
            return txn.rowcount == 1

        return await self.db.run(name, txn_fn)

    async def upgrade_guest(self, user_id: str, password_hash: str | None) -> bool:
        """Turns a guest into a full account, keeping its ID; False unless it was a guest.

        One conditional UPDATE, so two concurrent upgrades of one guest cannot both win.
        """

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE users SET is_guest = 0, password_hash = ?"
                " WHERE user_id = ? AND is_guest = 1 AND deactivated = 0",
                (password_hash, user_id),
            )
            return txn.rowcount == 1

        return await self.db.run("upgrade_guest", txn_fn)

    async def create_session(
        self, user_id: str, device_id: str, token: str, display_name: str | None, now_ms: int
    ) -> None:
        """Creates the device if new, and an access token for it."""

        def txn_fn(txn: Transaction) -> None:
            # Atomic insert-if-absent: concurrent logins naming one device must not collide.
            txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO NOTHING",
                (user_id, device_id, display_name, now_ms),
            )
            if txn.rowcount != 1:
                # Logging in again with a known device ID replaces its old tokens.
                txn.execute(
                    "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
            txn.execute(
                "INSERT INTO access_tokens (token, user_id, device_id, created_ts)"
                " VALUES (?, ?, ?, ?)",
                (token, user_id, device_id, now_ms),
            )

        await self.db.run("create_session", txn_fn)

    async def delete_token(self, token: str) -> None:
        def txn_fn(txn: Transaction) -> None:
            row = txn.select_one(
                "SELECT user_id, device_id FROM access_tokens WHERE token = ?", (token,)
            )
            txn.execute("DELETE FROM access_tokens WHERE token = ?", (token,))
            if row:
                txn.execute(
                    "DELETE FROM devices WHERE user_id = ? AND device_id = ?", (row[0], row[1])
                )

        await self.db.run("delete_token", txn_fn)
