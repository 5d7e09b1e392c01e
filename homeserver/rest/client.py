"""The client-server API resources: parse and authenticate, then call handlers."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.auth import Authenticator, access_token_from
from homeserver.handlers.messages import MessagesHandler
from homeserver.handlers.writes import Writes
from homeserver.http.errors import MatrixError, bad_param, bad_type, forbidden
from homeserver.http.server import (
    Router,
    parse_json_object,
    query_arg,
    query_int,
    require_str,
)
from homeserver.sync.handler import SyncHandler, SyncRequest
from homeserver.sync.tokens import StreamToken, TokenError
from workers.config import HomeserverConfig

Result = tuple[int, Any]

SUPPORTED_VERSIONS = [
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
]  # fmt: skip


def _token(raw: str | None, name: str) -> StreamToken | None:
    if raw is None:
        return None
    try:
        return StreamToken.decode(raw)
    except TokenError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name}: {e}") from None


@attrs.define
class ClientApi:
    config: HomeserverConfig
    auth: Authenticator
    writes: Writes
    sync: SyncHandler
    messages: MessagesHandler

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        router.add("GET", r"/_matrix/client/versions", self.on_versions)
        c("POST", r"/register", self.on_register)
        c("GET", r"/register/available", self.on_register_available)
        c("GET", r"/login", self.on_login_flows)
        c("POST", r"/login", self.on_login)
        c("POST", r"/logout", self.on_logout)
        c("GET", r"/account/whoami", self.on_whoami)
        c("POST", r"/createRoom", self.on_create_room)
        c("POST", r"/rooms/(?P<room_id>[^/]+)/join", self.on_join, "/_matrix/client/v3/rooms/{roomId}/join")
        c("POST", r"/join/(?P<room_id>[^/]+)", self.on_join, "/_matrix/client/v3/join/{roomIdOrAlias}")
        c("POST", r"/rooms/(?P<room_id>[^/]+)/invite", self.on_invite, "/_matrix/client/v3/rooms/{roomId}/invite")
        c("POST", r"/rooms/(?P<room_id>[^/]+)/leave", self.on_leave, "/_matrix/client/v3/rooms/{roomId}/leave")
        c(
            "PUT",
            r"/rooms/(?P<room_id>[^/]+)/send/(?P<event_type>[^/]+)/(?P<txn_id>[^/]+)",
            self.on_send,
            "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
        )
        c(
            "PUT",
            r"/rooms/(?P<room_id>[^/]+)/state/(?P<event_type>[^/]+)(?:/(?P<state_key>[^/]*))?",
            self.on_put_state,
            "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        )
        c("GET", r"/rooms/(?P<room_id>[^/]+)/messages", self.on_messages, "/_matrix/client/v3/rooms/{roomId}/messages")
        c("GET", r"/sync", self.on_sync)

    # -- discovery -------------------------------------------------------------------------

    async def on_versions(self, request: Request) -> Result:
        return 200, {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}

    # -- accounts --------------------------------------------------------------------------

    async def on_register(self, request: Request) -> Result:
        body = parse_json_object(request, allow_empty=True)
        kind = query_arg(request, "kind") or "user"
        if kind != "user":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        if not self.config.enable_registration:
            raise forbidden("Registration has been disabled")
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
            return 401, {"flows": [{"stages": ["m.login.dummy"]}], "params": {}, "session": _session_id()}
        if not isinstance(auth, dict) or auth.get("type") != "m.login.dummy":
            raise MatrixError(401, "M_FORBIDDEN", "Unsupported authentication type", flows=[{"stages": ["m.login.dummy"]}])
        if password is not None and len(password) > 512:
            raise bad_param("password is too long")
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
        return 200, await self.writes.call("logout", {"token": requester.access_token})

    async def on_whoami(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, {"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False}

    # -- rooms -----------------------------------------------------------------------------

    async def on_create_room(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        return 200, await self.writes.call("create_room", {"user_id": requester.user_id, "body": body})

    async def on_join(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        parse_json_object(request, allow_empty=True)
        if not room_id.startswith("!"):
            raise MatrixError(404, "M_NOT_FOUND", "Room aliases are not supported yet; join by room ID")
        await self.writes.call(
            "membership",
            {"sender": requester.user_id, "room_id": room_id, "target": requester.user_id, "membership": "join"},
        )
        return 200, {"room_id": room_id}

    async def on_invite(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        target = require_str(body, "user_id")
        assert target is not None
        if not is_valid_user_id(target):
            raise bad_param("Invalid user ID")
        await self.writes.call(
            "membership",
            {
                "sender": requester.user_id,
                "room_id": room_id,
                "target": target,
                "membership": "invite",
                "reason": require_str(body, "reason", optional=True),
            },
        )
        return 200, {}

    async def on_leave(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        await self.writes.call(
            "membership",
            {
                "sender": requester.user_id,
                "room_id": room_id,
                "target": requester.user_id,
                "membership": "leave",
                "reason": require_str(body, "reason", optional=True),
            },
        )
        return 200, {}

    async def on_send(self, request: Request, room_id: str, event_type: str, txn_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        content = parse_json_object(request, allow_empty=True)
        result = await self.writes.call(
            "send_event",
            {
                "room_id": room_id,
                "sender": requester.user_id,
                "type": event_type,
                "content": content,
                "txn": [requester.user_id, requester.device_id, txn_id],
            },
        )
        return 200, {"event_id": result["event_id"]}

    async def on_put_state(
        self, request: Request, room_id: str, event_type: str, state_key: str | None = None
    ) -> Result:
        requester = await self.auth.get_requester(request)
        content = parse_json_object(request, allow_empty=True)
        result = await self.writes.call(
            "send_event",
            {
                "room_id": room_id,
                "sender": requester.user_id,
                "type": event_type,
                "content": content,
                "state_key": state_key or "",
            },
        )
        return 200, {"event_id": result["event_id"]}

    async def on_messages(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        direction = query_arg(request, "dir") or "b"
        if direction not in ("b", "f"):
            raise bad_param("dir must be 'b' or 'f'")
        limits = self.config.limits
        limit = query_int(
            request, "limit", limits.default_messages_limit, minimum=0, maximum=limits.max_messages_limit
        )
        return 200, await self.messages.paginate(
            requester.user_id,
            requester.device_id,
            room_id,
            _token(query_arg(request, "from"), "from"),
            _token(query_arg(request, "to"), "to"),
            direction,
            limit,
        )

    # -- sync ------------------------------------------------------------------------------

    async def on_sync(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        limits = self.config.limits
        timeout_ms = query_int(request, "timeout", 0, minimum=0, maximum=limits.max_sync_timeout_ms)
        full_state = (query_arg(request, "full_state") or "false").lower() == "true"
        timeline_limit = _timeline_limit(query_arg(request, "filter"), limits.default_sync_timeline_limit)
        set_presence = query_arg(request, "set_presence")
        if set_presence is not None and set_presence not in ("online", "offline", "unavailable"):
            raise bad_param("set_presence must be online, offline or unavailable")
        return 200, await self.sync.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=_token(query_arg(request, "since"), "since"),
                timeout_ms=timeout_ms,
                full_state=full_state,
                timeline_limit=timeline_limit,
            )
        )


def _timeline_limit(raw_filter: str | None, default: int) -> int:
    """The timeline limit of an inline JSON filter (full filters come with the filter API)."""
    if raw_filter is None or not raw_filter.startswith("{"):
        return default
    try:
        f = json.loads(raw_filter)
    except (ValueError, RecursionError):  # RecursionError: too deeply nested
        raise MatrixError(400, "M_INVALID_PARAM", "filter is not valid JSON") from None
    limit: Any = f
    for key in ("room", "timeline", "limit"):
        limit = limit.get(key) if isinstance(limit, dict) else None
    if limit is None:
        return default
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "filter room.timeline.limit must be a non-negative integer")
    return min(limit, 1000)


def _session_id() -> str:
    import secrets

    return secrets.token_urlsafe(16)


__all__ = ["ClientApi", "access_token_from"]
