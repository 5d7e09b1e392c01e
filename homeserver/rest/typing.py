"""PUT /rooms/{roomId}/typing/{userId}: typing notifications (the `typing` stream)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.receipts import require_joined
from homeserver.handlers.typing import TypingSyncSource, typing_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import MatrixError, bad_type, forbidden, missing_param
from homeserver.http.server import Router, parse_json_object
from homeserver.sync.sources import register_sync_source

Result = tuple[int, Any]

# A client that says it is typing but gives no timeout.
DEFAULT_TYPING_TIMEOUT_MS = 30_000

WRITE_STREAMS = {"set_typing": "typing"}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    async def set_typing(a: dict[str, Any]) -> dict[str, Any]:
        await require_joined(ctx.event_store, a["room_id"], a["user_id"])
        await typing_writer(ctx).set_typing(
            a["room_id"], a["user_id"], bool(a["typing"]), int(a["timeout_ms"])
        )
        return {}

    return {"set_typing": set_typing}


def install(ctx: HomeServerContext, router: Router) -> None:
    async def on_typing(request: Request, room_id: str, user_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        if requester.user_id != user_id:
            raise forbidden("You may only set your own typing state")
        body = parse_json_object(request)
        typing = body.get("typing")
        if typing is None:
            raise missing_param("Missing parameter: typing")
        if not isinstance(typing, bool):
            raise bad_type("Parameter 'typing' must be a boolean")
        timeout = body.get("timeout", DEFAULT_TYPING_TIMEOUT_MS)
        if typing and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            raise bad_type("Parameter 'timeout' must be a non-negative integer")
        if not room_id.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
        await ctx.writes.call(
            "set_typing",
            {
                "room_id": room_id,
                "user_id": user_id,
                "typing": typing,
                "timeout_ms": min(timeout, ctx.config.limits.max_typing_timeout_ms)
                if typing
                else 0,
            },
        )
        return 200, {}

    router.add_client(
        "PUT",
        r"/rooms/(?P<room_id>[^/]+)/typing/(?P<user_id>[^/]+)",
        on_typing,
        "/_matrix/client/v3/rooms/{roomId}/typing/{userId}",
    )
    register_sync_source(ctx, TypingSyncSource(ctx))
