"""Accounts: registration, password login, logout, and shared-secret admin registration."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import Any

import bcrypt
from twisted.internet import threads

from homeserver.http.errors import MatrixError, forbidden
from storage.stores.accounts import AccountStore
from workers.routing import make_access_token  # the token format is the proxy's routing key

_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
NONCE_LIFETIME_MS = 60_000


def _random_localpart() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))


def make_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


class AccountHandler:
    def __init__(
        self,
        server_name: str,
        store: AccountStore,
        clock_ms: Any,
        *,
        enable_registration: bool,
        registration_shared_secret: str | None,
        bcrypt_rounds: int = 12,
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.clock_ms = clock_ms
        self.enable_registration = enable_registration
        self.registration_shared_secret = registration_shared_secret
        self.bcrypt_rounds = bcrypt_rounds
        self._nonces: dict[str, int] = {}

    def user_id_for(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def validate_localpart(self, localpart: str) -> None:
        if not localpart or not _LOCALPART.match(localpart):
            raise MatrixError(
                400,
                "M_INVALID_USERNAME",
                "User ID may only contain a-z, 0-9, and the characters ._=-/+",
            )
        if len(self.user_id_for(localpart).encode()) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID is too long")

    async def hash_password(self, password: str) -> str:
        hashed: bytes = await threads.deferToThread(
            bcrypt.hashpw, password.encode("utf-8"), bcrypt.gensalt(self.bcrypt_rounds)
        )
        return hashed.decode("ascii")

    async def check_password(self, password: str, hashed: str) -> bool:
        ok: bool = await threads.deferToThread(
            bcrypt.checkpw, password.encode("utf-8"), hashed.encode("ascii")
        )
        return ok

    async def register(
        self,
        localpart: str | None,
        password: str | None,
        *,
        device_id: str | None = None,
        display_name: str | None = None,
        inhibit_login: bool = False,
        admin: bool = False,
    ) -> dict[str, Any]:
        if localpart is None:
            localpart = _random_localpart()
        localpart = localpart.lower()
        self.validate_localpart(localpart)
        user_id = self.user_id_for(localpart)
        pw_hash = await self.hash_password(password) if password is not None else None
        if not await self.store.create_user(user_id, pw_hash, self.clock_ms(), admin=admin):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        result: dict[str, Any] = {"user_id": user_id, "home_server": self.server_name}
        if not inhibit_login:
            result.update(await self._new_session(user_id, device_id, display_name))
        return result

    async def register_guest(self, display_name: str | None) -> dict[str, Any]:
        """A new guest account, logged in on a device the server picks."""
        # A random localpart never collides in practice; retry rather than fail if it does.
        for _ in range(5):
            localpart = _random_localpart()
            user_id = self.user_id_for(localpart)
            if await self.store.create_guest(user_id, self.clock_ms()):
                session = await self._new_session(user_id, None, display_name)
                return {"user_id": user_id, "home_server": self.server_name, **session}
        raise MatrixError(500, "M_UNKNOWN", "Could not allocate a guest user ID")

    async def upgrade_guest(
        self,
        guest_access_token: str,
        localpart: str | None,
        password: str | None,
        *,
        device_id: str | None = None,
        display_name: str | None = None,
        inhibit_login: bool = False,
    ) -> dict[str, Any]:
        """Turns the guest owning `guest_access_token` into a full account with the same ID.

        The client must name the guest's own localpart as `username`.
        """
        info = await self.store.get_token(guest_access_token)
        if info is None or not info.is_guest:
            raise forbidden("guest_access_token is not the access token of a guest account")
        guest_localpart = info.user_id[1:].split(":", 1)[0]
        if localpart is None:
            raise MatrixError(
                400, "M_MISSING_PARAM", "username is required to upgrade a guest account"
            )
        if localpart.lower() != guest_localpart:
            raise MatrixError(
                400, "M_INVALID_USERNAME", "username must be the guest account's localpart"
            )
        pw_hash = await self.hash_password(password) if password is not None else None
        if not await self.store.upgrade_guest(info.user_id, pw_hash):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        result: dict[str, Any] = {"user_id": info.user_id, "home_server": self.server_name}
        if not inhibit_login:
            result.update(await self._new_session(info.user_id, device_id, display_name))
        return result

    async def _new_session(
        self, user_id: str, device_id: str | None, display_name: str | None
    ) -> dict[str, Any]:
        device_id = device_id or make_device_id()
        token = make_access_token(user_id[1:].split(":", 1)[0])
        await self.store.create_session(user_id, device_id, token, display_name, self.clock_ms())
        return {"access_token": token, "device_id": device_id}

    async def login(
        self, user: str, password: str, device_id: str | None, display_name: str | None
    ) -> dict[str, Any]:
        user_id = user if user.startswith("@") else self.user_id_for(user.lower())
        record = await self.store.get_user(user_id)
        if record is None or record[0] is None or record[2]:
            raise forbidden("Invalid username or password")
        if not await self.check_password(password, record[0]):
            raise forbidden("Invalid username or password")
        session = await self._new_session(user_id, device_id, display_name)
        return {"user_id": user_id, "home_server": self.server_name, **session}

    async def logout(self, token: str) -> dict[str, Any]:
        await self.store.delete_token(token)
        return {}

    # -- shared-secret registration (the admin API that existing tooling speaks) ---------

    def new_nonce(self) -> str:
        now = self.clock_ms()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_LIFETIME_MS}
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return nonce

    async def admin_register(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.registration_shared_secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        nonce = body.get("nonce")
        username, password, mac = body.get("username"), body.get("password"), body.get("mac")
        admin = body.get("admin", False)
        user_type = body.get("user_type")
        for key, value in (
            ("nonce", nonce),
            ("username", username),
            ("password", password),
            ("mac", mac),
        ):
            if not isinstance(value, str):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a string")
        assert isinstance(nonce, str) and isinstance(username, str) and isinstance(password, str)
        assert isinstance(mac, str)
        if not isinstance(admin, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "admin must be a boolean")
        issued = self._nonces.pop(nonce, None)
        if issued is None or self.clock_ms() - issued >= NONCE_LIFETIME_MS:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        parts = [nonce, username, password, "admin" if admin else "notadmin"]
        if user_type is not None:
            parts.append(str(user_type))
        want = hmac.new(
            self.registration_shared_secret.encode(), "\x00".join(parts).encode(), hashlib.sha1
        ).hexdigest()
        # Compare bytes: compare_digest raises TypeError on non-ASCII str.
        if not hmac.compare_digest(want.encode(), mac.lower().encode()):
            raise forbidden("HMAC incorrect")
        display_name = body.get("displayname")
        result = await self.register(
            username,
            password,
            admin=admin,
            display_name=display_name if isinstance(display_name, str) else None,
        )
        return result
