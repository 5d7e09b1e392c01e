"""The filter API: POST /user/{userId}/filter and GET /user/{userId}/filter/{filterId}."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.writes import Operation, Writes
from homeserver.http.errors import MatrixError, forbidden, not_found
from homeserver.http.server import Router, parse_json_object
from homeserver.sync.user_filters import UserFilters, check_filter
from storage.stores.filters import FilterStore

Result = tuple[int, Any]

# Stored filters have no stream of their own: the events writer stores them, so that
# every client write goes through one place. IDs are content hashes, so retries are safe.
WRITE_STREAMS = {"create_filter": "events"}


def user_filters(ctx: HomeServerContext) -> UserFilters:
    """One UserFilters per process, shared with /sync through ctx.extras."""
    existing = ctx.extras.get("user_filters")
    if isinstance(existing, UserFilters):
        return existing
    made = UserFilters(FilterStore(ctx.db), ctx.clock_ms)
    ctx.extras["user_filters"] = made
    return made


@attrs.define
class FilterApi:
    auth: Authenticator
    writes: Writes
    filters: UserFilters

    def register_routes(self, router: Router) -> None:
        router.add_client(
            "POST",
            r"/user/(?P<user_id>[^/]+)/filter",
            self.on_create,
            "/_matrix/client/v3/user/{userId}/filter",
        )
        router.add_client(
            "GET",
            r"/user/(?P<user_id>[^/]+)/filter/(?P<filter_id>[^/]+)",
            self.on_get,
            "/_matrix/client/v3/user/{userId}/filter/{filterId}",
        )

    async def on_create(self, request: Request, user_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        if user_id != requester.user_id:
            raise forbidden("Cannot create filters for other users")
        body = parse_json_object(request)
        check_filter(body)  # answer 400 here rather than after a forwarded write
        result = await self.writes.call("create_filter", {"user_id": user_id, "filter": body})
        return 200, {"filter_id": result["filter_id"]}

    async def on_get(self, request: Request, user_id: str, filter_id: str) -> Result:
        requester = await self.auth.get_requester(request)
        if user_id != requester.user_id:
            raise forbidden("Cannot get filters of other users")
        found = await self.filters.get_json(user_id, filter_id)
        if found is None:
            raise not_found("No such filter")
        return 200, found


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    filters = user_filters(ctx)

    async def create_filter(a: dict[str, Any]) -> dict[str, Any]:
        raw = a.get("filter")
        if not isinstance(raw, dict) or not isinstance(a.get("user_id"), str):
            raise MatrixError(400, "M_BAD_JSON", "create_filter needs user_id and filter")
        return {"filter_id": await filters.create(a["user_id"], raw)}

    return {"create_filter": create_filter}


def install(ctx: HomeServerContext, router: Router) -> None:
    FilterApi(auth=ctx.auth, writes=ctx.writes, filters=user_filters(ctx)).register_routes(router)
