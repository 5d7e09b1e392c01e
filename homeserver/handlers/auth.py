"""Authenticating client requests by access token."""

from __future__ import annotations

import attrs
from twisted.web.server import Request

from homeserver.handlers.guest_access import guest_may_request
from homeserver.http.errors import MatrixError
from storage.stores.accounts import AccountStore


@attrs.frozen(slots=True)
class Requester:
    user_id: str
    device_id: str
    access_token: str
    is_guest: bool = False


def access_token_from(request: Request) -> str | None:
    header = request.getHeader("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header")
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(b"access_token")
    if values:
        return values[0].decode("utf-8", "replace")
    return None


class Authenticator:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    async def get_requester(self, request: Request) -> Requester:
        token = access_token_from(request)
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        info = await self.store.get_token(token)
        if info is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
        if info.is_guest:
            # The one place guests are held to their subset of the API (guest_access.py).
            method = request.method.decode("ascii", "replace")
            path = request.path.decode("ascii", "replace")
            if not guest_may_request(method, path):
                raise MatrixError(
                    403, "M_GUEST_ACCESS_FORBIDDEN", "Guest accounts may not use this endpoint"
                )
        return Requester(info.user_id, info.device_id, token, info.is_guest)
