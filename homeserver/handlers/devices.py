"""Device management: renaming and deleting devices, and user-interactive auth by password.

Renames and deletions change the user's device list, so they run on the `device_lists`
stream's writer (`DeviceWriter`). The password check runs wherever the request arrives.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Any

import bcrypt
from twisted.internet import threads

from homeserver.handlers.device_lists import DeviceListWriter
from homeserver.http.errors import bad_type, not_found
from storage.stores.accounts import AccountStore
from storage.stores.devices import DeviceStore

PASSWORD_STAGE = "m.login.password"
UIA_FLOWS = [{"stages": [PASSWORD_STAGE]}]


class DeviceWriter:
    """Runs on the device_lists writer."""

    def __init__(self, store: DeviceStore, lists: DeviceListWriter) -> None:
        self.store = store
        self.lists = lists

    async def rename(self, user_id: str, device_id: str, display_name: str) -> None:
        async def store(pos: int) -> bool:
            return await self.store.set_display_name(pos, user_id, device_id, display_name)

        if not await self.lists.write(user_id, store):
            raise not_found("No such device")

    async def delete(self, user_id: str, device_ids: Collection[str]) -> None:
        async def store(pos: int) -> int:
            return await self.store.delete_devices(pos, user_id, device_ids)

        await self.lists.write(user_id, store)

    async def note_new_device(self, user_id: str) -> None:
        await self.lists.note_change(user_id)


def _challenge(session: str, **error: Any) -> tuple[int, dict[str, Any]]:
    return 401, {**error, "flows": UIA_FLOWS, "params": {}, "session": session}


async def password_auth(
    accounts: AccountStore, server_name: str, user_id: str, body: Mapping[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """User-interactive auth with one stage, the user's password. None when `body.auth`
    completes it; else the 401 response to send (the flows, or the failure and the flows).

    The single stage completes within one request, so any `session` is accepted (no
    per-process session state for a worker to lose)."""
    auth = body.get("auth")
    if auth is None:
        return _challenge(secrets.token_urlsafe(16))
    if not isinstance(auth, dict):
        raise bad_type("auth must be an object")
    session = auth.get("session")
    if not isinstance(session, str) or not session:
        session = secrets.token_urlsafe(16)
    if auth.get("type") != PASSWORD_STAGE:
        return _challenge(session, errcode="M_UNRECOGNIZED", error="Unsupported auth type")
    identifier = auth.get("identifier")
    claimed: Any
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            return _challenge(session, errcode="M_UNRECOGNIZED", error="Unsupported identifier")
        claimed = identifier.get("user")
    else:
        claimed = auth.get("user", user_id)
    if isinstance(claimed, str) and not claimed.startswith("@"):
        claimed = f"@{claimed.lower()}:{server_name}"
    password = auth.get("password")
    if claimed != user_id or not isinstance(password, str):
        return _challenge(session, errcode="M_FORBIDDEN", error="Invalid user or password")
    record = await accounts.get_user(user_id)
    if record is None or record[0] is None or not await _check(password, record[0]):
        return _challenge(session, errcode="M_FORBIDDEN", error="Invalid password")
    return None


async def _check(password: str, hashed: str) -> bool:
    try:
        ok: bool = await threads.deferToThread(
            bcrypt.checkpw, password.encode("utf-8"), hashed.encode("ascii")
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return ok
