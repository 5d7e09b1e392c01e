"""Room endpoints: creation, membership, sending events, state, history and reads."""

from __future__ import annotations

import inspect
import json
from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.events.validation import is_valid_room_alias, is_valid_user_id
from homeserver.handlers.auth import Authenticator, Requester
from homeserver.handlers.membership import MembershipHandler
from homeserver.handlers.messages import MessagesHandler, messages_handler
from homeserver.handlers.room_reads import MEMBERSHIPS, RoomReadHandler
from homeserver.handlers.room_upgrade import RoomUpgradeHandler
from homeserver.handlers.visibility import VisibilityFilter
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import MatrixError, bad_param, bad_type, missing_param, not_found
from homeserver.http.server import Router, parse_json_object, query_arg, query_int, require_str
from homeserver.sync.filters import FilterError, RoomEventFilter, parse_room_event_filter
from homeserver.sync.tokens import MAX_POSITION, StreamToken, TokenError
from homeserver.sync.user_filters import parse_inline_room_event_filter
from storage.stores.directory import DirectoryStore
from storage.stores.room_extras import RoomExtrasStore
from storage.stores.state import StateStore
from workers.config import HomeserverConfig

Result = tuple[int, Any]

_ROOM = r"/rooms/(?P<room_id>[^/]+)"
_NAME = "/_matrix/client/v3/rooms/{roomId}"
# Default number of events /context returns around the event.
DEFAULT_CONTEXT_LIMIT = 10


def parse_token(raw: str | None, name: str) -> StreamToken | None:
    if raw is None:
        return None
    try:
        return StreamToken.decode(raw)
    except TokenError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name}: {e}") from None


def _reason(body: dict[str, Any]) -> str | None:
    return require_str(body, "reason", optional=True)


def _target_user(body: dict[str, Any]) -> str:
    target = require_str(body, "user_id")
    assert target is not None
    if not is_valid_user_id(target):
        raise bad_param("Invalid user ID")
    return target


def _is_guest(requester: Requester) -> bool:
    return bool(getattr(requester, "is_guest", False))


@attrs.define
class RoomApi:
    ctx: HomeServerContext
    config: HomeserverConfig
    auth: Authenticator
    writes: Writes
    messages: MessagesHandler
    reads: RoomReadHandler

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        c("POST", r"/createRoom", self.on_create_room)
        c("POST", _ROOM + "/join", self.on_join, _NAME + "/join")
        c(
            "POST",
            r"/join/(?P<room_id>[^/]+)",
            self.on_join,
            "/_matrix/client/v3/join/{roomIdOrAlias}",
        )
        c(
            "POST",
            r"/knock/(?P<room_id>[^/]+)",
            self.on_knock,
            "/_matrix/client/v3/knock/{roomIdOrAlias}",
        )
        c("POST", _ROOM + "/invite", self.on_invite, _NAME + "/invite")
        c("POST", _ROOM + "/leave", self.on_leave, _NAME + "/leave")
        c("POST", _ROOM + "/forget", self.on_forget, _NAME + "/forget")
        c("POST", _ROOM + "/kick", self.on_kick, _NAME + "/kick")
        c("POST", _ROOM + "/ban", self.on_ban, _NAME + "/ban")
        c("POST", _ROOM + "/unban", self.on_unban, _NAME + "/unban")
        c("GET", r"/joined_rooms", self.on_joined_rooms)
        c(
            "PUT",
            _ROOM + r"/send/(?P<event_type>[^/]+)/(?P<txn_id>[^/]+)",
            self.on_send,
            _NAME + "/send/{eventType}/{txnId}",
        )
        c(
            "PUT",
            _ROOM + r"/redact/(?P<event_id>[^/]+)/(?P<txn_id>[^/]+)",
            self.on_redact,
            _NAME + "/redact/{eventId}/{txnId}",
        )
        c("GET", _ROOM + "/state", self.on_get_state, _NAME + "/state")
        state_path = _ROOM + r"/state/(?P<event_type>[^/]+)(?:/(?P<state_key>[^/]*))?"
        state_name = _NAME + "/state/{eventType}/{stateKey}"
        c("PUT", state_path, self.on_put_state, state_name)
        c("GET", state_path, self.on_get_state_event, state_name)
        c(
            "GET",
            _ROOM + r"/event/(?P<event_id>[^/]+)",
            self.on_get_event,
            _NAME + "/event/{eventId}",
        )
        c(
            "GET",
            _ROOM + r"/context/(?P<event_id>[^/]+)",
            self.on_context,
            _NAME + "/context/{eventId}",
        )
        c("GET", _ROOM + "/members", self.on_members, _NAME + "/members")
        c("GET", _ROOM + "/joined_members", self.on_joined_members, _NAME + "/joined_members")
        c(
            "GET",
            _ROOM + "/timestamp_to_event",
            self.on_timestamp_to_event,
            "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event",
        )
        c("POST", _ROOM + "/upgrade", self.on_upgrade, _NAME + "/upgrade")
        c(
            "POST",
            _ROOM + r"/report/(?P<event_id>[^/]+)",
            self.on_report_event,
            _NAME + "/report/{eventId}",
        )
        c("POST", _ROOM + "/report", self.on_report_room, _NAME + "/report")
        c("GET", _ROOM + "/messages", self.on_messages, _NAME + "/messages")

    # -- creation and membership -------------------------------------------------------------

    async def on_create_room(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        return 200, await self.writes.call(
            "create_room", {"user_id": requester.user_id, "body": body}
        )

    async def _resolve_room(self, room_id_or_alias: str) -> str:
        """A room ID, or the room a local alias names (404 M_NOT_FOUND if none)."""
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias
        if not room_id_or_alias.startswith("#") or not is_valid_room_alias(room_id_or_alias):
            raise bad_param("Expected a room ID (!...) or a room alias (#...)")
        directory = self.ctx.extras.get("directory")
        if directory is None:
            raise not_found("Room alias not found")
        resolved = directory.resolve_alias(room_id_or_alias)
        if inspect.isawaitable(resolved):
            resolved = await resolved
        if not isinstance(resolved, str):
            raise not_found("Room alias not found")
        return resolved

    async def _membership(
        self,
        requester: Requester,
        action: str,
        room_id: str,
        target: str,
        reason: str | None,
    ) -> dict[str, Any]:
        return await self.writes.call(
            "membership",
            {
                "action": action,
                "sender": requester.user_id,
                "room_id": room_id,
                "target": target,
                "reason": reason,
                "is_guest": _is_guest(requester),
            },
        )

    async def on_join(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        resolved = await self._resolve_room(room_id)
        await self._membership(requester, "join", resolved, requester.user_id, _reason(body))
        return 200, {"room_id": resolved}

    async def on_knock(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        resolved = await self._resolve_room(room_id)
        await self._membership(requester, "knock", resolved, requester.user_id, _reason(body))
        return 200, {"room_id": resolved}

    async def on_invite(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        target = _target_user(body)
        await self._membership(requester, "invite", room_id, target, _reason(body))
        return 200, {}

    async def on_leave(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        await self._membership(requester, "leave", room_id, requester.user_id, _reason(body))
        return 200, {}

    async def _moderate(self, request: Request, room_id: str, action: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        target = _target_user(body)
        await self._membership(requester, action, room_id, target, _reason(body))
        return 200, {}

    async def on_kick(self, request: Request, room_id: str) -> Result:
        return await self._moderate(request, room_id, "kick")

    async def on_ban(self, request: Request, room_id: str) -> Result:
        return await self._moderate(request, room_id, "ban")

    async def on_unban(self, request: Request, room_id: str) -> Result:
        return await self._moderate(request, room_id, "unban")

    async def on_forget(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        parse_json_object(request, allow_empty=True)
        await self.writes.call("forget_room", {"user_id": requester.user_id, "room_id": room_id})
        return 200, {}

    async def on_joined_rooms(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, await self.reads.get_joined_rooms(requester.user_id)

    # -- sending -----------------------------------------------------------------------------

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
        # Sending is activity for presence (homeserver/rest/presence.py; fire and forget).
        note_activity = self.ctx.extras.get("presence_activity")
        if note_activity is not None:
            note_activity(requester.user_id)
        return 200, {"event_id": result["event_id"]}

    async def on_redact(self, request: Request, room_id: str, event_id: str, txn_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        content: dict[str, Any] = {}
        reason = _reason(body)
        if reason is not None:
            content["reason"] = reason
        result = await self.writes.call(
            "send_event",
            {
                "room_id": room_id,
                "sender": requester.user_id,
                "type": "m.room.redaction",
                "content": content,
                "redacts": event_id,
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

    # -- reads -------------------------------------------------------------------------------

    async def on_get_state(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, await self.reads.get_state((requester.user_id, requester.device_id), room_id)

    async def on_get_state_event(
        self, request: Request, room_id: str, event_type: str, state_key: str | None = None
    ) -> Result:
        requester = await self.auth.get_requester(request)
        output_format = query_arg(request, "format") or "content"
        if output_format not in ("content", "event"):
            raise bad_param("format must be 'content' or 'event'")
        device = (requester.user_id, requester.device_id)
        pe = await self.reads.get_state_event(device, room_id, event_type, state_key or "")
        if output_format == "event":
            return 200, await self.reads.serialize_one(pe, device)
        return 200, dict(pe.event.content)

    async def on_get_event(self, request: Request, room_id: str, event_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, await self.reads.get_event(
            (requester.user_id, requester.device_id), room_id, event_id
        )

    async def on_context(self, request: Request, room_id: str, event_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        limit = query_int(
            request,
            "limit",
            DEFAULT_CONTEXT_LIMIT,
            minimum=0,
            maximum=self.config.limits.max_messages_limit,
        )
        event_filter = _parse_filter(query_arg(request, "filter"))
        return 200, await self.reads.get_context(
            (requester.user_id, requester.device_id), room_id, event_id, limit, event_filter
        )

    async def on_members(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        membership = query_arg(request, "membership")
        not_membership = query_arg(request, "not_membership")
        for name, value in (("membership", membership), ("not_membership", not_membership)):
            if value is not None and value not in MEMBERSHIPS:
                raise bad_param(f"{name} must be one of {', '.join(sorted(MEMBERSHIPS))}")
        return 200, await self.reads.get_members(
            (requester.user_id, requester.device_id),
            room_id,
            parse_token(query_arg(request, "at"), "at"),
            membership,
            not_membership,
        )

    async def on_joined_members(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        return 200, await self.reads.get_joined_members(requester.user_id, room_id)

    async def on_timestamp_to_event(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        if query_arg(request, "ts") is None:
            raise missing_param("Missing query parameter: ts")
        ts = query_int(request, "ts", 0, minimum=0, maximum=MAX_POSITION)
        direction = query_arg(request, "dir")
        if direction is None:
            raise missing_param("Missing query parameter: dir")
        if direction not in ("f", "b"):
            raise bad_param("dir must be 'f' or 'b'")
        return 200, await self.reads.timestamp_to_event(
            requester.user_id, room_id, ts, direction == "f"
        )

    # -- upgrades and reports ----------------------------------------------------------------

    async def on_upgrade(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        new_version = require_str(body, "new_version")
        creators = body.get("additional_creators")
        if creators is not None and (
            not isinstance(creators, list) or not all(isinstance(u, str) for u in creators)
        ):
            raise bad_type("additional_creators must be a list of user IDs")
        return 200, await self.writes.call(
            "upgrade_room",
            {
                "user_id": requester.user_id,
                "room_id": room_id,
                "new_version": new_version,
                "additional_creators": creators,
            },
        )

    async def on_report_event(self, request: Request, room_id: str, event_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        reason = _reason(body)
        rooms = await self.ctx.event_store.get_rooms_for_user(requester.user_id)
        if rooms.get(room_id) != "join":
            raise not_found("The event was not found or you are not joined to the room")
        await self.reads.visible_event(requester.user_id, room_id, event_id)
        await self.writes.call(
            "report_content",
            {
                "reporter": requester.user_id,
                "room_id": room_id,
                "event_id": event_id,
                "reason": reason,
            },
        )
        return 200, {}

    async def on_report_room(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        reason = require_str(body, "reason")
        if await self.ctx.event_store.get_room_version(room_id) is None:
            raise not_found("The room was not found")
        await self.writes.call(
            "report_content",
            {"reporter": requester.user_id, "room_id": room_id, "event_id": None, "reason": reason},
        )
        return 200, {}

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
        from_raw = query_arg(request, "from")
        return 200, await messages_handler(self.ctx).paginate(
            requester.user_id,
            requester.device_id,
            room_id,
            parse_token(from_raw, "from"),
            parse_token(query_arg(request, "to"), "to"),
            direction,
            limit,
            event_filter=parse_inline_room_event_filter(query_arg(request, "filter")),
            from_raw=from_raw,
        )


def _parse_filter(raw: str | None) -> RoomEventFilter | None:
    if raw is None:
        return None
    try:
        return parse_room_event_filter(json.loads(raw))
    except (ValueError, RecursionError, FilterError) as e:
        raise bad_param(f"Invalid filter: {e}") from None


WRITE_STREAMS = {
    "create_room": "events",
    "membership": "events",
    "send_event": "events",
    "forget_room": "events",
    "report_content": "events",
    "upgrade_room": "events",
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    rooms, events = ctx.rooms, ctx.event_creation
    assert rooms is not None and events is not None
    membership_handler = MembershipHandler(
        events, ctx.event_store, ctx.server_name, accounts=ctx.account_store
    )
    upgrades = RoomUpgradeHandler(events, ctx.event_store, DirectoryStore(ctx.db))
    extras = RoomExtrasStore(ctx.db)

    async def create_room(a: dict[str, Any]) -> dict[str, Any]:
        return await rooms.create_room(a["user_id"], a["body"])

    async def membership(a: dict[str, Any]) -> dict[str, Any]:
        # "action" is absent in requests from processes that predate it: the membership
        # itself is the action then.
        return await membership_handler.update_membership(
            a.get("action") or a["membership"],
            a["sender"],
            a["room_id"],
            a["target"],
            reason=a.get("reason"),
            is_guest=bool(a.get("is_guest")),
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
        if a["type"] == "m.room.guest_access" and a.get("state_key") == "":
            await membership_handler.remove_guests_if_disallowed(a["room_id"])
        return {"event_id": event_id}

    async def forget_room(a: dict[str, Any]) -> dict[str, Any]:
        await membership_handler.forget(a["user_id"], a["room_id"], extras, ctx.clock_ms())
        return {}

    async def report_content(a: dict[str, Any]) -> dict[str, Any]:
        report_id = await extras.add_report(
            a["room_id"], a.get("event_id"), a["reporter"], a.get("reason"), ctx.clock_ms()
        )
        return {"report_id": report_id}

    async def upgrade_room(a: dict[str, Any]) -> dict[str, Any]:
        return await upgrades.upgrade_room(
            a["user_id"], a["room_id"], a["new_version"], a.get("additional_creators")
        )

    return {
        "create_room": create_room,
        "membership": membership,
        "send_event": send_event,
        "forget_room": forget_room,
        "report_content": report_content,
        "upgrade_room": upgrade_room,
    }


def install(ctx: HomeServerContext, router: Router) -> None:
    visibility = VisibilityFilter.install(ctx)
    state_store = ctx.extras.get("state_store")
    RoomApi(
        ctx=ctx,
        config=ctx.config,
        auth=ctx.auth,
        writes=ctx.writes,
        messages=MessagesHandler(ctx.event_store, ctx.events_tracker, ctx.clock_ms),
        reads=RoomReadHandler(
            ctx.event_store,
            RoomExtrasStore(ctx.db),
            visibility,
            ctx.events_tracker,
            ctx.clock_ms,
            state_store=state_store if isinstance(state_store, StateStore) else None,
            serializer=lambda: ctx.extras.get("serializer"),
        ),
    ).register_routes(router)
