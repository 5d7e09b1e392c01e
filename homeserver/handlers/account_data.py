"""Account data (global and per room), room tags (the m.tag room account data) and the
m.fully_read marker, on the `account_data` stream."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from homeserver.handlers.receipts import require_event_in_room, require_joined
from homeserver.handlers.stream_writer import StreamWriter
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.account_data import AccountDataStore
from storage.stores.events import EventStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

STREAM = "account_data"
TAG_TYPE = "m.tag"
FULLY_READ_TYPE = "m.fully_read"
# Types only the server sets; clients read them as any other account data.
SERVER_MANAGED_TYPES = frozenset({FULLY_READ_TYPE, "m.push_rules"})


class AccountDataWriter:
    """Runs on the account_data stream's writer."""

    def __init__(
        self, store: AccountDataStore, events: EventStore, writer: StreamWriter, notifier: Notifier
    ) -> None:
        self.store = store
        self.events = events
        self.writer = writer
        self.notifier = notifier
        # Read-modify-write of one user's data (tags) runs one at a time; all writes of
        # this stream run in this process, so a lock here is enough.
        self._locks: dict[str, defer.DeferredLock] = {}

    @asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(user_id, defer.DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(user_id, None)

    async def _put(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> int:
        async def store(pos: int) -> None:
            await self.store.put(pos, user_id, room_id, data_type, content)

        _, pos = await self.writer.write(store, lambda: self.notifier.wake_user(user_id))
        return pos

    async def set(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> None:
        async with self._user_lock(user_id):
            await self._put(user_id, room_id, data_type, content)

    async def add_tag(self, user_id: str, room_id: str, tag: str, content: dict[str, Any]) -> None:
        async with self._user_lock(user_id):
            current = await self.store.get(user_id, room_id, TAG_TYPE) or {}
            tags = dict(current.get("tags") or {}) if isinstance(current.get("tags"), dict) else {}
            tags[tag] = content
            await self._put(user_id, room_id, TAG_TYPE, {**current, "tags": tags})

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        async with self._user_lock(user_id):
            current = await self.store.get(user_id, room_id, TAG_TYPE) or {}
            tags = current.get("tags")
            if not isinstance(tags, dict) or tag not in tags:
                return  # nothing to remove: no change, no new position
            tags = {k: v for k, v in tags.items() if k != tag}
            await self._put(user_id, room_id, TAG_TYPE, {**current, "tags": tags})

    async def set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        await require_joined(self.events, room_id, user_id)
        await require_event_in_room(self.events, room_id, event_id)
        await self.set(user_id, room_id, FULLY_READ_TYPE, {"event_id": event_id})


def tags_of(content: dict[str, Any] | None) -> dict[str, Any]:
    tags = (content or {}).get("tags")
    return tags if isinstance(tags, dict) else {}


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await AccountDataStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    users = frozenset(await AccountDataStore(ctx.db).get_changed_users(after, up_to))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, Wakeups(users=users)))


# -- /sync ------------------------------------------------------------------------------


class AccountDataSyncSource:
    stream = STREAM
    # Nothing new when the stream has not moved (see homeserver.sync.sources).
    quiet_when_unmoved = True

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx
        self.store = AccountDataStore(ctx.db)

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        since = None if req.full_state else req.since
        rows = await self.store.get_for_user(req.user_id, since, req.up_to)
        if since is not None and req.newly_joined_room_ids:
            # Rooms joined in this window get their whole room account data.
            seen = {(r.room_id, r.type) for r in rows}
            for r in await self.store.get_for_user(req.user_id, None, req.up_to):
                if r.room_id in req.newly_joined_room_ids and (r.room_id, r.type) not in seen:
                    rows.append(r)
        global_events: list[Any] = []
        rooms: dict[str, dict[str, list[Any]]] = {}
        for r in rows:
            event = {"type": r.type, "content": r.content}
            if r.room_id is None:
                global_events.append(event)
            elif r.room_id in req.joined_room_ids:
                rooms.setdefault(r.room_id, {"account_data": []})["account_data"].append(event)
        sections: dict[str, Any] = {"account_data": global_events} if global_events else {}
        return SyncContribution(
            global_sections=sections, rooms=rooms, has_data=bool(global_events or rooms)
        )
