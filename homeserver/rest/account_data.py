"""Account data and room tags (the `account_data` stream):

GET/PUT /user/{userId}/account_data/{type}
GET/PUT /user/{userId}/rooms/{roomId}/account_data/{type}
GET     /user/{userId}/rooms/{roomId}/tags
PUT/DELETE /user/{userId}/rooms/{roomId}/tags/{tag}     (stored as m.tag room account data)
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.account_data import (
    SERVER_MANAGED_TYPES,
    TAG_TYPE,
    AccountDataSyncSource,
    AccountDataWriter,
    tags_of,
)
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import MatrixError, bad_param, bad_type, forbidden, not_found
from homeserver.http.server import Router, parse_json_object
from homeserver.sync.sources import register_sync_source
from storage.stores.account_data import AccountDataStore

Result = tuple[int, Any]

MAX_TAG_BYTES = 255

WRITE_STREAMS = {
    "set_account_data": "account_data",
    "add_tag": "account_data",
    "remove_tag": "account_data",
    "set_fully_read": "account_data",
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    writer = AccountDataWriter(
        AccountDataStore(ctx.db),
        ctx.event_store,
        get_stream_writer(ctx, "account_data"),
        ctx.notifier,
    )

    async def set_account_data(a: dict[str, Any]) -> dict[str, Any]:
        await writer.set(a["user_id"], a.get("room_id"), a["type"], a["content"])
        return {}

    async def add_tag(a: dict[str, Any]) -> dict[str, Any]:
        await writer.add_tag(a["user_id"], a["room_id"], a["tag"], a["content"])
        return {}

    async def remove_tag(a: dict[str, Any]) -> dict[str, Any]:
        await writer.remove_tag(a["user_id"], a["room_id"], a["tag"])
        return {}

    async def set_fully_read(a: dict[str, Any]) -> dict[str, Any]:
        await writer.set_fully_read(a["user_id"], a["room_id"], a["event_id"])
        return {}

    return {
        "set_account_data": set_account_data,
        "add_tag": add_tag,
        "remove_tag": remove_tag,
        "set_fully_read": set_fully_read,
    }


def _check(requester_id: str, user_id: str, room_id: str | None) -> None:
    if requester_id != user_id:
        raise forbidden("Cannot access account data of other users")
    if room_id is not None and not room_id.startswith("!"):
        raise bad_param("Invalid room ID")


def install(ctx: HomeServerContext, router: Router) -> None:
    store = AccountDataStore(ctx.db)

    async def on_get(
        request: Request, user_id: str, data_type: str, room_id: str | None = None
    ) -> Result:
        requester = await ctx.auth.get_requester(request)
        _check(requester.user_id, user_id, room_id)
        content = await store.get(user_id, room_id, data_type)
        if content is None:
            raise not_found("Room account data not found" if room_id else "Account data not found")
        return 200, content

    async def on_put(
        request: Request, user_id: str, data_type: str, room_id: str | None = None
    ) -> Result:
        requester = await ctx.auth.get_requester(request)
        _check(requester.user_id, user_id, room_id)
        content = parse_json_object(request)
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        await ctx.writes.call(
            "set_account_data",
            {"user_id": user_id, "room_id": room_id, "type": data_type, "content": content},
        )
        return 200, {}

    async def on_get_tags(request: Request, user_id: str, room_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        _check(requester.user_id, user_id, room_id)
        return 200, {"tags": tags_of(await store.get(user_id, room_id, TAG_TYPE))}

    def _check_tag(tag: str) -> None:
        if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise bad_param(f"Tag names must not exceed {MAX_TAG_BYTES} bytes")

    async def on_put_tag(request: Request, user_id: str, room_id: str, tag: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        _check(requester.user_id, user_id, room_id)
        _check_tag(tag)
        content = parse_json_object(request)
        order = content.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            raise bad_type("Parameter 'order' must be a number")
        await ctx.writes.call(
            "add_tag", {"user_id": user_id, "room_id": room_id, "tag": tag, "content": content}
        )
        return 200, {}

    async def on_delete_tag(request: Request, user_id: str, room_id: str, tag: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        _check(requester.user_id, user_id, room_id)
        _check_tag(tag)
        await ctx.writes.call("remove_tag", {"user_id": user_id, "room_id": room_id, "tag": tag})
        return 200, {}

    c = router.add_client
    user = r"/user/(?P<user_id>[^/]+)"
    room = user + r"/rooms/(?P<room_id>[^/]+)"
    name = "/_matrix/client/v3/user/{userId}"
    c("GET", user + r"/account_data/(?P<data_type>[^/]+)", on_get, name + "/account_data/{type}")
    c("PUT", user + r"/account_data/(?P<data_type>[^/]+)", on_put, name + "/account_data/{type}")
    room_name = name + "/rooms/{roomId}"
    c(
        "GET",
        room + r"/account_data/(?P<data_type>[^/]+)",
        on_get,
        room_name + "/account_data/{type}",
    )
    c(
        "PUT",
        room + r"/account_data/(?P<data_type>[^/]+)",
        on_put,
        room_name + "/account_data/{type}",
    )
    c("GET", room + r"/tags", on_get_tags, room_name + "/tags")
    c("PUT", room + r"/tags/(?P<tag>[^/]+)", on_put_tag, room_name + "/tags/{tag}")
    c("DELETE", room + r"/tags/(?P<tag>[^/]+)", on_delete_tag, room_name + "/tags/{tag}")
    register_sync_source(ctx, AccountDataSyncSource(ctx))
