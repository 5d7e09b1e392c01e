"""The /sync endpoint."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.auth import Authenticator
from homeserver.http.errors import bad_param
from homeserver.http.server import Router, query_arg, query_int
from homeserver.rest.filters import user_filters
from homeserver.rest.rooms import parse_token
from homeserver.sync.handler import SyncHandler, SyncLimits, SyncRequest
from homeserver.sync.user_filters import UserFilters
from storage.stores.sync import SyncStore
from workers.config import HomeserverConfig

Result = tuple[int, Any]

PRESENCE_STATES = ("online", "offline", "unavailable")


def query_bool(request: Request, name: str) -> bool:
    raw = query_arg(request, name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_param(f"Query parameter {name!r} must be true or false")


@attrs.define
class SyncApi:
    config: HomeserverConfig
    auth: Authenticator
    sync: SyncHandler
    filters: UserFilters

    def register_routes(self, router: Router) -> None:
        router.add_client("GET", r"/sync", self.on_sync)

    async def on_sync(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        limits = self.config.limits
        timeout_ms = query_int(request, "timeout", 0, minimum=0, maximum=limits.max_sync_timeout_ms)
        full_state = query_bool(request, "full_state")
        use_state_after = query_bool(request, "use_state_after")
        set_presence = query_arg(request, "set_presence") or "online"
        if set_presence not in PRESENCE_STATES:
            raise bad_param("set_presence must be online, offline or unavailable")
        since = parse_token(query_arg(request, "since"), "since")
        sync_filter = await self.filters.resolve_sync_filter(
            requester.user_id, query_arg(request, "filter")
        )
        return 200, await self.sync.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=since,
                timeout_ms=timeout_ms,
                full_state=full_state,
                filter=sync_filter,
                set_presence=set_presence,
                use_state_after=use_state_after,
            )
        )


def sync_handler(ctx: HomeServerContext) -> SyncHandler:
    """The process's SyncHandler (shared through ctx.extras["sync_handler"])."""
    existing = ctx.extras.get("sync_handler")
    if isinstance(existing, SyncHandler):
        return existing
    limits = ctx.config.limits
    made = SyncHandler(
        event_store=ctx.event_store,
        sync_store=SyncStore(ctx.db),
        notifier=ctx.notifier,
        trackers=ctx.trackers,
        writes_stream=ctx.writes_stream,
        clock_ms=ctx.clock_ms,
        extras=ctx.extras,
        limits=SyncLimits(
            default_timeline_limit=limits.default_sync_timeline_limit,
            max_timeline_limit=max(limits.max_messages_limit, limits.default_sync_timeline_limit),
            catch_up_timeout_s=limits.sync_catch_up_timeout_ms / 1000.0,
            unknown_position_wait_s=limits.sync_unknown_position_wait_ms / 1000.0,
            max_timeline_scan=limits.sync_max_timeline_scan,
            membership_cache_users=limits.sync_membership_cache_users,
            room_change_cache_rooms=limits.sync_room_change_cache_rooms,
        ),
    )
    ctx.extras["sync_handler"] = made
    return made


def install(ctx: HomeServerContext, router: Router) -> None:
    SyncApi(
        config=ctx.config,
        auth=ctx.auth,
        sync=sync_handler(ctx),
        filters=user_filters(ctx),
    ).register_routes(router)
