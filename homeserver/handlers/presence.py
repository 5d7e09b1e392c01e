"""Presence (online / unavailable / offline, status message, last activity), on the
`presence` stream. Users see the presence of everyone they share a joined room with.

Idle users: an `online` user whose last activity is older than `presence.idle_timeout_ms`
reads as `unavailable` (computed when read, not written back to the stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homeserver.handlers.stream_writer import StreamWriter
from homeserver.handlers.writes import Writes
from homeserver.notifier import Notifier
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from storage.stores.presence import PresenceRow, PresenceStore
from workers.config import PresenceConfig

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

logger = logging.getLogger(__name__)

STREAM = "presence"
STATES = ("online", "unavailable", "offline")
# Keeps whatever status message is stored.
KEEP = object()


def presence_content(row: PresenceRow, now_ms: int, config: PresenceConfig) -> dict[str, Any]:
    """The m.presence content (and GET /presence body) of a stored row, as of now."""
    ago = max(0, now_ms - row.last_active_ts)
    state = row.state
    if state == "online" and ago > config.idle_timeout_ms:
        state = "unavailable"
    content: dict[str, Any] = {"presence": state, "last_active_ago": ago}
    if state == "online":
        content["currently_active"] = ago <= config.active_window_ms
    if row.status_msg is not None:
        content["status_msg"] = row.status_msg
    return content


class PresenceWriter:
    """Runs on the presence stream's writer."""

    def __init__(
        self,
        store: PresenceStore,
        writer: StreamWriter,
        notifier: Notifier,
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.writer = writer
        self.notifier = notifier
        self.clock_ms = clock_ms

    async def set_presence(self, user_id: str, state: str, status_msg: Any = KEEP) -> None:
        """Sets the state (an activity: last active becomes now, unless going offline or
        unavailable, which keep the last activity)."""
        current = await self.store.get(user_id)
        now = self.clock_ms()
        if status_msg is KEEP:
            status_msg = current.status_msg if current is not None else None
        last_active = now if state == "online" or current is None else current.last_active_ts
        # Everyone sharing a room with the user is interested.
        rooms = await self.store.get_joined_rooms([user_id])

        async def store(pos: int) -> None:
            await self.store.put(pos, user_id, state, status_msg, last_active)

        def wake() -> None:
            self.notifier.wake_user(user_id)
            for room_id in rooms:
                self.notifier.wake_room(room_id)

        await self.writer.write(store, wake)


class PresenceActivity:
    """Marks users online as they /sync (the `set_presence` parameter), without writing
    more than once per `active_window_ms` while nothing changes."""

    def __init__(
        self,
        store: PresenceStore,
        writes: Writes,
        config: PresenceConfig,
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.writes = writes
        self.config = config
        self.clock_ms = clock_ms

    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None:
        if not self.config.enabled or set_presence not in ("online", "unavailable"):
            return
        current = await self.store.get(user_id)
        if current is not None and current.state == set_presence:
            if set_presence != "online":
                return
            if self.clock_ms() - current.last_active_ts < self.config.active_window_ms:
                return
        try:
            await self.writes.call(
                "presence_activity", {"user_id": user_id, "presence": set_presence}
            )
        except Exception as e:
            # Presence is best effort: an unreachable presence writer must not fail /sync.
            logger.warning("could not record presence activity", extra={"error": repr(e)})


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await PresenceStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> int:
    store = PresenceStore(ctx.db)
    users = await store.get_changed_users(after, up_to)
    for user_id in users:
        ctx.notifier.wake_user(user_id)
    for room_id in await store.get_joined_rooms(users):
        ctx.notifier.wake_room(room_id)
    return up_to


# -- /sync ------------------------------------------------------------------------------


class PresenceSyncSource:
    stream = STREAM
    # Nothing new when the stream has not moved (see homeserver.sync.sources).
    quiet_when_unmoved = True

    def __init__(self, ctx: HomeServerContext, activity: PresenceActivity) -> None:
        self.ctx = ctx
        self.store = PresenceStore(ctx.db)
        self.activity = activity

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None:
        await self.activity.on_sync_request(user_id, device_id, set_presence)

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        config = self.ctx.config.presence
        if not config.enabled:
            return SyncContribution()
        users = await self.store.get_users_sharing_rooms(req.joined_room_ids)
        users.add(req.user_id)
        since = None if req.full_state else req.since
        rows = await self.store.get_for_users(users, since, req.up_to)
        if since is not None and req.newly_joined_room_ids:
            # People met in rooms joined in this window: their current presence.
            met = await self.store.get_users_sharing_rooms(req.newly_joined_room_ids)
            have = {r.user_id for r in rows}
            rows += await self.store.get_for_users(met - have, None, req.up_to)
        now = self.ctx.clock_ms()
        events = [
            {"type": "m.presence", "sender": r.user_id, "content": presence_content(r, now, config)}
            for r in rows
        ]
        return SyncContribution(
            global_sections={"presence": events} if events else {}, has_data=bool(events)
        )
