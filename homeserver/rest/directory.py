"""Room aliases and the published room directory.

PUT/GET/DELETE /directory/room/{roomAlias}     alias -> room ID (local aliases)
GET            /rooms/{roomId}/aliases         a room's local aliases
GET/PUT        /directory/list/room/{roomId}   a room's visibility in the directory
GET/POST       /publicRooms                    the published room directory
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.directory import DirectoryHandler, PublicRoomsQuery
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import bad_param, bad_type
from homeserver.http.server import Router, parse_json_object, query_arg, query_int, require_str

Result = tuple[int, Any]

_ALIAS = r"/directory/room/(?P<room_alias>[^/]+)"
_ALIAS_NAME = "/_matrix/client/v3/directory/room/{roomAlias}"
_LIST = r"/directory/list/room/(?P<room_id>[^/]+)"
_LIST_NAME = "/_matrix/client/v3/directory/list/room/{roomId}"


@attrs.define
class DirectoryApi:
    server_name: str
    auth: Authenticator
    writes: Writes
    directory: DirectoryHandler
    max_public_rooms_limit: int

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        c("PUT", _ALIAS, self.on_put_alias, _ALIAS_NAME)
        c("GET", _ALIAS, self.on_get_alias, _ALIAS_NAME)
        c("DELETE", _ALIAS, self.on_delete_alias, _ALIAS_NAME)
        c(
            "GET",
            r"/rooms/(?P<room_id>[^/]+)/aliases",
            self.on_get_room_aliases,
            "/_matrix/client/v3/rooms/{roomId}/aliases",
        )
        c("GET", _LIST, self.on_get_visibility, _LIST_NAME)
        c("PUT", _LIST, self.on_put_visibility, _LIST_NAME)
        c("GET", r"/publicRooms", self.on_get_public_rooms)
        c("POST", r"/publicRooms", self.on_post_public_rooms)

    # -- aliases --------------------------------------------------------------------------

    async def on_put_alias(self, request: Request, room_alias: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request)
        room_id = require_str(body, "room_id")
        await self.writes.call(
            "set_room_alias",
            {"user_id": requester.user_id, "alias": room_alias, "room_id": room_id},
        )
        return 200, {}

    async def on_get_alias(self, request: Request, room_alias: str) -> Result:
        return 200, await self.directory.get_alias(room_alias)

    async def on_delete_alias(self, request: Request, room_alias: str) -> Result:
        requester = await self.auth.get_requester(request)
        await self.writes.call(
            "delete_room_alias", {"user_id": requester.user_id, "alias": room_alias}
        )
        return 200, {}

    async def on_get_room_aliases(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        aliases = await self.directory.get_local_aliases(requester.user_id, room_id)
        return 200, {"aliases": aliases}

    # -- visibility -----------------------------------------------------------------------

    async def on_get_visibility(self, request: Request, room_id: str) -> Result:
        return 200, await self.directory.get_visibility(room_id)

    async def on_put_visibility(self, request: Request, room_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        body = parse_json_object(request, allow_empty=True)
        visibility = body.get("visibility", "public")
        if visibility not in ("public", "private"):
            raise bad_param("visibility must be 'public' or 'private'")
        await self.writes.call(
            "set_room_visibility",
            {"user_id": requester.user_id, "room_id": room_id, "visibility": visibility},
        )
        return 200, {}

    # -- /publicRooms ---------------------------------------------------------------------

    def _check_server(self, server: Any) -> None:
        if server is not None and server != self.server_name:
            raise bad_param(f"Only this server's room directory ({self.server_name}) can be listed")

    async def on_get_public_rooms(self, request: Request) -> Result:
        self._check_server(query_arg(request, "server"))
        limit = query_int(
            request,
            "limit",
            self.max_public_rooms_limit,
            minimum=1,
            maximum=self.max_public_rooms_limit,
        )
        query = PublicRoomsQuery(limit=limit, since=query_arg(request, "since"))
        return 200, await self.directory.public_rooms(query)

    async def on_post_public_rooms(self, request: Request) -> Result:
        await self.auth.get_requester(request)
        self._check_server(query_arg(request, "server"))
        body = parse_json_object(request, allow_empty=True)
        limit = body.get("limit")
        if limit is None:
            limit = self.max_public_rooms_limit
        elif isinstance(limit, bool) or not isinstance(limit, int):
            raise bad_type("limit must be an integer")
        elif limit < 1:
            raise bad_param("limit must be >= 1")
        since = require_str(body, "since", optional=True)
        filter_ = body.get("filter") or {}
        if not isinstance(filter_, dict):
            raise bad_type("filter must be an object")
        term = require_str(filter_, "generic_search_term", optional=True)
        room_types = filter_.get("room_types")
        if room_types is not None and (
            not isinstance(room_types, list)
            or not all(t is None or isinstance(t, str) for t in room_types)
        ):
            raise bad_type("filter.room_types must be a list of strings and nulls")
        all_networks = body.get("include_all_networks", False)
        if not isinstance(all_networks, bool):
            raise bad_type("include_all_networks must be a boolean")
        network = require_str(body, "third_party_instance_id", optional=True)
        if network is not None:
            if all_networks:
                raise bad_param("third_party_instance_id needs include_all_networks false")
            # No application services bridge any third-party network here.
            return 200, {"chunk": [], "total_room_count_estimate": 0}
        query = PublicRoomsQuery(
            limit=min(limit, self.max_public_rooms_limit),
            since=since,
            search_term=term or None,
            room_types=tuple(room_types) if room_types is not None else None,
        )
        return 200, await self.directory.public_rooms(query)


WRITE_STREAMS = {
    "set_room_alias": "events",
    "delete_room_alias": "events",
    "set_room_visibility": "events",
}


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    directory = DirectoryHandler.install(ctx)

    async def set_room_alias(a: dict[str, Any]) -> dict[str, Any]:
        await directory.create_alias(a["user_id"], a["alias"], a["room_id"])
        return {}

    async def delete_room_alias(a: dict[str, Any]) -> dict[str, Any]:
        await directory.delete_alias(a["user_id"], a["alias"])
        return {}

    async def set_room_visibility(a: dict[str, Any]) -> dict[str, Any]:
        await directory.set_visibility(a["user_id"], a["room_id"], a["visibility"])
        return {}

    return {
        "set_room_alias": set_room_alias,
        "delete_room_alias": delete_room_alias,
        "set_room_visibility": set_room_visibility,
    }


def install(ctx: HomeServerContext, router: Router) -> None:
    DirectoryApi(
        server_name=ctx.server_name,
        auth=ctx.auth,
        writes=ctx.writes,
        directory=DirectoryHandler.install(ctx),
        max_public_rooms_limit=ctx.config.limits.max_public_rooms_limit,
    ).register_routes(router)
