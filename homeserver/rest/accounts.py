"""Account endpoints: versions, registration, login, logout, whoami."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import MatrixError, bad_param, bad_type, forbidden
from homeserver.http.server import Router, parse_json_object, query_arg, require_str
from workers.config import HomeserverConfig

Result = tuple[int, Any]

SUPPORTED_VERSIONS = ["r0.6.1"] + [f"v1.{minor}" for minor in range(1, 12)]


@attrs.define
class AccountApi:
    config: HomeserverConfig
    auth: Authenticator
    writes: Writes

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        router.add("GET", r"/_matrix/client/versions", self.on_versions)
        c("POST", r"/register", self.on_register)
        c("GET", r"/register/available", self.on_register_available)
        c("GET", r"/login", self.on_login_flows)
        c("POST", r"/login", self.on_login)
        c("POST", r"/logout", self.on_logout)
        c("GET", r"/account/whoami", self.on_whoami)

    async def on_versions(self, request: Request) -> Result:
        return 200, {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}

    async def on_register(self, request: Request) -> Result:
        body = parse_json_object(request, allow_empty=True)
        kind = query_arg(request, "kind") or "user"
        if kind == "guest":
            return await self._register_guest(body)
        if kind != "user":
            raise bad_param("kind must be 'user' or 'guest'")
        if not self.config.enable_registration:
            raise forbidden("Registration has been disabled")
        guest_access_token = require_str(body, "guest_access_token", optional=True)
        username = require_str(body, "username", optional=True)
        password = require_str(body, "password", optional=True)
        device_id = require_str(body, "device_id", optional=True)
        display_name = require_str(body, "initial_device_display_name", optional=True)
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise bad_type("inhibit_login must be a boolean")
        auth = body.get("auth")
        if auth is None:
            # User-interactive auth: the only stage we offer is m.login.dummy.
            return 401, {
                "flows": [{"stages": ["m.login.dummy"]}],
                "params": {},
                "session": _session_id(),
            }
        if not isinstance(auth, dict) or auth.get("type") != "m.login.dummy":
            raise MatrixError(
                401,
                "M_FORBIDDEN",
                "Unsupported authentication type",
                flows=[{"stages": ["m.login.dummy"]}],
            )
        if password is not None and len(password) > 512:
            raise bad_param("password is too long")
        if guest_access_token is not None:
            # Upgrading a guest: the same flow, keeping the guest's user ID.
            return 200, await self.writes.call(
                "upgrade_guest",
                {
                    "guest_access_token": guest_access_token,
                    "localpart": username,
                    "password": password,
                    "device_id": device_id,
                    "display_name": display_name,
                    "inhibit_login": inhibit_login,
                },
            )
        return 200, await self.writes.call(
            "register",
            {
                "localpart": username,
                "password": password,
                "device_id": device_id,
                "display_name": display_name,
                "inhibit_login": inhibit_login,
            },
        )

    async def _register_guest(self, body: dict[str, Any]) -> Result:
        """kind=guest: no user-interactive auth; of the body only the device's display name
        counts (the spec has the server ignore the rest and pick the device ID)."""
        if not self.config.allow_guest_access:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        display_name = body.get("initial_device_display_name")
        return 200, await self.writes.call(
            "register_guest",
            {"display_name": display_name if isinstance(display_name, str) else None},
        )

    async def on_register_available(self, request: Request) -> Result:
        username = query_arg(request, "username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
        user_id = f"@{username.lower()}:{self.config.server_name}"
        if not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_USERNAME", "Invalid username")
        if await self.auth.store.get_user(user_id) is not None:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        return 200, {"available": True}

    async def on_login_flows(self, request: Request) -> Result:
        return 200, {"flows": [{"type": "m.login.password"}]}

    async def on_login(self, request: Request) -> Result:
        body = parse_json_object(request)
        login_type = require_str(body, "type")
        if login_type != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type!r}")
        identifier = body.get("identifier")
        user: str | None
        if identifier is not None:
            if not isinstance(identifier, dict):
                raise bad_type("identifier must be an object")
            if identifier.get("type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
            user = require_str(identifier, "user")
        else:
            user = require_str(body, "user")
        password = require_str(body, "password")
        assert user is not None and password is not None
        return 200, await self.writes.call(
            "login",
            {
                "user": user,
                "password": password,
                "device_id": require_str(body, "device_id", optional=True),
                "display_name": require_str(body, "initial_device_display_name", optional=True),
            },
        )

    async def on_logout(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        result = await self.writes.call("logout", {"token": requester.access_token})
        # The device is gone: its keys go with it, a device list change (rest/devices.py).
        await self.writes.call(
            "devices_delete", {"user_id": requester.user_id, "device_ids": [requester.device_id]}
        )
        return 200, result

    async def on_whoami(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, {
            "user_id": requester.user_id,
            "device_id": requester.device_id,
            "is_guest": requester.is_guest,
        }


WRITE_STREAMS = {
    "register": "events",
    "register_guest": "events",
    "upgrade_guest": "events",
    "login": "events",
    "logout": "events",
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    accounts = ctx.accounts
    assert accounts is not None

    async def register(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.register(
            a.get("localpart"),
            a.get("password"),
            device_id=a.get("device_id"),
            display_name=a.get("display_name"),
            inhibit_login=bool(a.get("inhibit_login")),
        )

    async def register_guest(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.register_guest(a.get("display_name"))

    async def upgrade_guest(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.upgrade_guest(
            a["guest_access_token"],
            a.get("localpart"),
            a.get("password"),
            device_id=a.get("device_id"),
            display_name=a.get("display_name"),
            inhibit_login=bool(a.get("inhibit_login")),
        )

    async def login(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.login(
            a["user"], a["password"], a.get("device_id"), a.get("display_name")
        )

    async def logout(a: dict[str, Any]) -> dict[str, Any]:
        return await accounts.logout(a["token"])

    return _noting_new_devices(
        ctx,
        {
            "register": register,
            "register_guest": register_guest,
            "upgrade_guest": upgrade_guest,
            "login": login,
            "logout": logout,
        },
    )


def _noting_new_devices(ctx: HomeServerContext, ops: dict[str, Operation]) -> dict[str, Operation]:
    """A new session's device changes its user's device list: a write of the device_lists
    stream (homeserver/rest/devices.py) once the session exists."""

    def wrap(op: Operation) -> Operation:
        async def run(a: dict[str, Any]) -> dict[str, Any]:
            result = await op(a)
            if "device_id" in result:
                await ctx.writes.call("device_list_new_device", {"user_id": result["user_id"]})
            return result

        return run

    return {name: wrap(op) for name, op in ops.items()}


def install(ctx: HomeServerContext, router: Router) -> None:
    AccountApi(config=ctx.config, auth=ctx.auth, writes=ctx.writes).register_routes(router)


def _session_id() -> str:
    import secrets

    return secrets.token_urlsafe(16)
