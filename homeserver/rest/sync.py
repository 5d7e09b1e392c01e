"""The /sync endpoint."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.auth import Authenticator
from homeserver.http.errors import MatrixError, bad_param
from homeserver.http.server import Router, query_arg, query_int
from homeserver.rest.rooms import parse_token
from homeserver.sync.handler import SyncHandler, SyncRequest
from workers.config import HomeserverConfig

Result = tuple[int, Any]


@attrs.define
class SyncApi:
    config: HomeserverConfig
    auth: Authenticator
    sync: SyncHandler

    def register_routes(self, router: Router) -> None:
        c = router.add_client
        c("GET", r"/sync", self.on_sync)

    async def on_sync(self, request: Request) -> Result:
        requester = await self.auth.get_requester(request)
        limits = self.config.limits
        timeout_ms = query_int(request, "timeout", 0, minimum=0, maximum=limits.max_sync_timeout_ms)
        full_state = (query_arg(request, "full_state") or "false").lower() == "true"
        timeline_limit = _timeline_limit(
            query_arg(request, "filter"), limits.default_sync_timeline_limit
        )
        set_presence = query_arg(request, "set_presence")
        if set_presence is not None and set_presence not in ("online", "offline", "unavailable"):
            raise bad_param("set_presence must be online, offline or unavailable")
        return 200, await self.sync.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=parse_token(query_arg(request, "since"), "since"),
                timeout_ms=timeout_ms,
                full_state=full_state,
                timeline_limit=timeline_limit,
            )
        )


def install(ctx: HomeServerContext, router: Router) -> None:
    SyncApi(
        config=ctx.config,
        auth=ctx.auth,
        sync=SyncHandler(ctx.event_store, ctx.notifier, ctx.events_tracker, ctx.clock_ms),
    ).register_routes(router)


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
        raise MatrixError(
            400, "M_INVALID_PARAM", "filter room.timeline.limit must be a non-negative integer"
        )
    return min(limit, 1000)
