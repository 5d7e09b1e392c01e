"""GET/PUT /presence/{userId}/status (the `presence` stream; `presence.enabled` turns it off)."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.web.server import Request

from homeserver.context import HomeServerContext
from homeserver.handlers.presence import (
    STATES,
    PresenceActivity,
    PresenceSyncSource,
    PresenceWriter,
    SyncingNotice,
    SyncingReporter,
    presence_content,
)
from homeserver.handlers.stream_writer import get_stream_writer
from homeserver.handlers.writes import Operation
from homeserver.http.errors import MatrixError, bad_param, bad_type, forbidden, missing_param
from homeserver.http.server import Router, parse_json_object
from homeserver.sync.sources import register_sync_source
from storage.stores.presence import PresenceStore

logger = logging.getLogger(__name__)

Result = tuple[int, Any]

WRITE_STREAMS = {
    "set_presence": "presence",
    "presence_syncing": "presence",
    "presence_activity": "presence",
}
# ctx.extras: this process's PresenceWriter (on the presence writer only), and a
# `fn(user_id)` other modules call when a user does something (e.g. sends an event).
WRITER_KEY = "presence_writer"
ACTIVITY_KEY = "presence_activity"


def presence_writer(ctx: HomeServerContext) -> PresenceWriter:
    existing = ctx.extras.get(WRITER_KEY)
    if isinstance(existing, PresenceWriter):
        return existing
    made = PresenceWriter(
        PresenceStore(ctx.db),
        get_stream_writer(ctx, "presence"),
        ctx.notifier,
        ctx.clock_ms,
        ctx.config.presence,
        max_sync_ms=ctx.config.limits.max_sync_timeout_ms,
    )
    ctx.extras[WRITER_KEY] = made
    return made


def write_operations(ctx: HomeServerContext) -> dict[str, Operation]:
    writer = presence_writer(ctx)

    async def set_presence(a: dict[str, Any]) -> dict[str, Any]:
        await writer.set_presence(a["user_id"], a["presence"], a.get("status_msg"))
        return {}

    async def presence_syncing(a: dict[str, Any]) -> dict[str, Any]:
        try:
            notice = SyncingNotice.from_json(a)
        except (TypeError, ValueError) as e:
            raise MatrixError(400, "M_BAD_JSON", f"Bad syncing notice: {e}") from None
        await writer.on_syncing(notice)
        return {}

    async def presence_activity(a: dict[str, Any]) -> dict[str, Any]:
        await writer.on_activity(a["user_id"])
        return {}

    return {
        "set_presence": set_presence,
        "presence_syncing": presence_syncing,
        "presence_activity": presence_activity,
    }


def _start_sweep(ctx: HomeServerContext, writer: PresenceWriter) -> None:
    """The presence writer's periodic sweep (idle -> unavailable, gone -> offline)."""

    async def run() -> None:
        try:
            await writer.sweep()
        except Exception:
            # The next round tries again.
            logger.exception("presence sweep failed")

    loop = LoopingCall(lambda: defer.ensureDeferred(run()))
    loop.clock = ctx.reactor
    loop.start(ctx.config.presence.sweep_interval_ms / 1000.0, now=False)
    ctx.extras["presence_sweep"] = loop


def install(ctx: HomeServerContext, router: Router) -> None:
    store = PresenceStore(ctx.db)
    config = ctx.config.presence

    async def on_put(request: Request, user_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        if requester.user_id != user_id:
            raise forbidden("You may only set your own presence")
        body = parse_json_object(request)
        state = body.get("presence")
        if state is None:
            raise missing_param("Missing parameter: presence")
        if state not in STATES:
            raise bad_param("presence must be one of online, unavailable, offline")
        status_msg = body.get("status_msg")
        if status_msg is not None and not isinstance(status_msg, str):
            raise bad_type("Parameter 'status_msg' must be a string")
        if config.enabled:
            await ctx.writes.call(
                "set_presence", {"user_id": user_id, "presence": state, "status_msg": status_msg}
            )
        return 200, {}

    async def on_get(request: Request, user_id: str) -> Result:
        requester = await ctx.auth.get_requester(request)
        if requester.user_id != user_id:
            mine = [
                r
                for r, m in (await ctx.event_store.get_rooms_for_user(requester.user_id)).items()
                if m == "join"
            ]
            if user_id not in await store.get_users_sharing_rooms(mine):
                raise forbidden("You are not allowed to see their presence")
        row = await store.get(user_id) if config.enabled else None
        if row is None:
            return 200, {"presence": "offline"}
        return 200, presence_content(row, ctx.clock_ms(), config)

    name = "/_matrix/client/v3/presence/{userId}/status"
    router.add_client("PUT", r"/presence/(?P<user_id>[^/]+)/status", on_put, name)
    router.add_client("GET", r"/presence/(?P<user_id>[^/]+)/status", on_get, name)
    reporter = None
    if config.enabled:
        writes = ctx.writes

        async def send(notice: SyncingNotice) -> None:
            await writes.call("presence_syncing", notice.to_json())

        reporter = SyncingReporter(send, ctx.reactor, config)
    activity = PresenceActivity(store, ctx.writes, config, ctx.clock_ms, reporter)
    ctx.extras[ACTIVITY_KEY] = activity.on_user_activity
    register_sync_source(ctx, PresenceSyncSource(ctx, activity))
    # write_operations (run before install, on the stream's writer only) made the writer.
    writer = ctx.extras.get(WRITER_KEY)
    if config.enabled and ctx.writes_stream("presence") and isinstance(writer, PresenceWriter):
        _start_sweep(ctx, writer)
