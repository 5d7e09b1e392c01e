"""Users, devices and access tokens."""

from __future__ import annotations

import attrs

from storage.database import Database, Transaction


@attrs.frozen(slots=True)
class TokenInfo:
    user_id: str
    device_id: str
    token: str


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
            "SELECT t.user_id, t.device_id FROM access_tokens t"
            " JOIN users u ON u.user_id = t.user_id WHERE t.token = ? AND u.deactivated = 0",
            (token,),
        )
        if not rows:
            return None
        return TokenInfo(user_id=rows[0][0], device_id=rows[0][1], token=token)

    # -- writes (main only) -------------------------------------------------------------

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, admin: bool = False
    ) -> bool:
        """Returns False when the user ID is taken."""

        def txn_fn(txn: Transaction) -> bool:
            # One atomic statement: a check-then-insert races with a concurrent registration
            # of the same ID on PostgreSQL (unique violation instead of False).
            txn.execute(
                "INSERT INTO users (user_id, password_hash, creation_ts, admin) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, now_ms, 1 if admin else 0),
            )
            return txn.rowcount == 1

        return await self.db.run("create_user", txn_fn)

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
