"""Room endpoints: creation, membership, sending events, state, history."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.messages import MessagesHandler
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import MatrixError, bad_param
from homeserver.http.server import Router, parse_json_object, query_arg, query_int, require_str
from homeserver.sync.tokens import StreamToken, TokenError
from workers.config import HomeserverConfig

Result = tuple[int, Any]


def parse_token(raw: str | None, name: str) -> StreamToken | None:
    if raw is None:
        return None
    try:
        return StreamToken.decode(raw)
    except TokenError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name}: {e}") from None


@attrs.define
class RoomApi:
    config: HomeserverConfig
    auth: Authenticator
    writes: Writes
    messages: MessagesHandler

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        c("POST", r"/createRoom", self.on_create_room)
        c(
            "POST",
            r"/rooms/(?P<room_id>[^/]+)/join",
            self.on_join,
            "/_matrix/client/v3/rooms/{roomId}/join",
        )
        c(
            "POST",
            r"/join/(?P<room_id>[^/]+)",
            self.on_join,
            "/_matrix/client/v3/join/{roomIdOrAlias}",
        )
        c(
            "POST",
            r"/rooms/(?P<room_id>[^/]+)/invite",
            self.on_invite,
            "/_matrix/client/v3/rooms/{roomId}/invite",
        )
        c(
            "POST",
            r"/rooms/(?P<room_id>[^/]+)/leave",
            self.on_leave,
            "/_matrix/client/v3/rooms/{roomId}/leave",
        )
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
        c(
            "GET",
            r"/rooms/(?P<room_id>[^/]+)/messages",
            self.on_messages,
            "/_matrix/client/v3/rooms/{roomId}/messages",
        )

    async def on_create_room(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        return 200, await self.writes.call(
            "create_room", {"user_id": requester.user_id, "body": body}
        )

    async def on_join(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        parse_json_object(request, allow_empty=True)
        if not room_id.startswith("!"):
            raise MatrixError(
                404, "M_NOT_FOUND", "Room aliases are not supported yet; join by room ID"
            )
        await self.writes.call(
            "membership",
            {
                "sender": requester.user_id,
                "room_id": room_id,
                "target": requester.user_id,
                "membership": "join",
            },
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
            request,
            "limit",
            limits.default_messages_limit,
            minimum=0,
            maximum=limits.max_messages_limit,
        )
        return 200, await self.messages.paginate(
            requester.user_id,
            requester.device_id,
            room_id,
            parse_token(query_arg(request, "from"), "from"),
            parse_token(query_arg(request, "to"), "to"),
            direction,
            limit,
        )


WRITE_STREAMS = {"create_room": "events", "membership": "events", "send_event": "events"}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    rooms, events = ctx.rooms, ctx.event_creation
    assert rooms is not None and events is not None

    async def create_room(a: dict[str, Any]) -> dict[str, Any]:
        return await rooms.create_room(a["user_id"], a["body"])

    async def membership(a: dict[str, Any]) -> dict[str, Any]:
        return await rooms.update_membership(
            a["sender"], a["room_id"], a["target"], a["membership"], a.get("reason")
        )

    async def send_event(a: dict[str, Any]) -> dict[str, Any]:
        txn = a.get("txn")
        event_id, _ = await events.send(
            a["room_id"],
            a["sender"],
            a["type"],
            a["content"],
            state_key=a.get("state_key"),
            txn=(txn[0], txn[1], txn[2]) if txn else None,
            redacts=a.get("redacts"),
        )
        return {"event_id": event_id}

    return {"create_room": create_room, "membership": membership, "send_event": send_event}


def install(ctx: HomeServerContext, router: Router) -> None:
    RoomApi(
        config=ctx.config,
        auth=ctx.auth,
        writes=ctx.writes,
        messages=MessagesHandler(ctx.event_store, ctx.events_tracker, ctx.clock_ms),
    ).register_routes(router)
