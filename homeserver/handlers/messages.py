"""Reading room history: /messages pagination.

Tokens are stream tokens (homeserver.sync.tokens); only the events position matters here,
so a /sync `next_batch` or a timeline's `prev_batch` works as `from`. Going backwards
from position P returns events at or below P; forwards, events above P. `end` is where
the next page starts, and is absent once there is nothing more the user may see.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homeserver.events.client_format import serialize_event
from homeserver.http.errors import forbidden
from homeserver.sync.filters import RoomEventFilter
from homeserver.sync.state_access import RoomStateReader
from homeserver.sync.tokens import StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.sync import SyncStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

MEMBER = "m.room.member"
# Events examined per /messages request to fill a filtered page before answering with
# what was found (and an `end` to continue from).
DEFAULT_MAX_SCAN = 2000
_BATCH = 200


class MessagesHandler:
    def __init__(
        self,
        store: EventStore,
        tracker: StreamPositionTracker,
        clock_ms: Callable[[], int],
        *,
        extras: dict[str, Any] | None = None,
        sync_store: SyncStore | None = None,
        max_scan: int = DEFAULT_MAX_SCAN,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.clock_ms = clock_ms
        # visibility, serializer and state_store, looked up per request (installed by
        # other modules, possibly after this one).
        self.extras = extras if extras is not None else {}
        self.sync_store = sync_store
        self.max_scan = max_scan

    async def _visible_until(self, user_id: str, room_id: str) -> int:
        """The newest stream position of the room the user may read; 403 if none."""
        pos = self.tracker.position
        visibility = self.extras.get("visibility")
        check = getattr(visibility, "check_user_can_see_room_state", None)
        if check is not None:
            access = await check(user_id, room_id)
            return int(access.cap(pos))
        rooms = await self.store.get_rooms_for_user(user_id)
        membership = rooms.get(room_id)
        if membership == "join":
            return pos
        if membership in ("leave", "ban"):
            changes = await self.store.get_membership_changes(user_id, 0, pos)
            left_at = [p for rid, m, p in changes if rid == room_id and m in ("leave", "ban")]
            if left_at:
                return left_at[-1]
        raise forbidden("You are not a member of this room")

    async def _visible(self, user_id: str, events: list[PersistedEvent]) -> list[PersistedEvent]:
        visibility = self.extras.get("visibility")
        if visibility is None or not events:
            return events
        result = visibility.filter_events_for_user(user_id, events)
        if inspect.isawaitable(result):
            result = await result
        return list(result)

    async def paginate(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        from_token: StreamToken | None,
        to_token: StreamToken | None,
        direction: str,
        limit: int,
        event_filter: RoomEventFilter | None = None,
        from_raw: str | None = None,
    ) -> dict[str, Any]:
        event_filter = event_filter or RoomEventFilter()
        visible = await self._visible_until(user_id, room_id)
        chunk: list[PersistedEvent] = []
        end: int | None = None
        if direction == "b":
            start = min(from_token.events if from_token else visible, visible)
            floor = to_token.events if to_token else 0
            cursor, scanned = start, 0
            while limit > 0 and len(chunk) < limit:
                batch = await self.store.get_room_events_backwards(room_id, cursor, floor, _BATCH)
                if batch:
                    cursor = batch[-1].stream_ordering - 1
                scanned += len(batch)
                chunk.extend(await self._wanted(user_id, room_id, batch, event_filter))
                truncated = len(chunk) > limit
                if truncated:
                    chunk = chunk[:limit]
                    cursor = chunk[-1].stream_ordering - 1
                if len(batch) < _BATCH and not truncated:
                    end = None  # nothing further
                    break
                end = cursor
                if scanned >= self.max_scan:
                    break
        else:
            start = from_token.events if from_token else 0
            ceiling = min(to_token.events if to_token else visible, visible)
            cursor, scanned = start, 0
            while limit > 0 and len(chunk) < limit:
                batch = await self.store.get_room_events_forwards(room_id, cursor, ceiling, _BATCH)
                if batch:
                    cursor = batch[-1].stream_ordering
                scanned += len(batch)
                chunk.extend(await self._wanted(user_id, room_id, batch, event_filter))
                truncated = len(chunk) > limit
                if truncated:
                    chunk = chunk[:limit]
                    cursor = chunk[-1].stream_ordering
                if len(batch) < _BATCH and not truncated:
                    end = None  # nothing further
                    break
                end = cursor
                if scanned >= self.max_scan:
                    break
        body: dict[str, Any] = {
            "start": from_raw if from_raw is not None else StreamToken(events=start).encode(),
            "chunk": await self._serialize(chunk, user_id, device_id),
        }
        if end is not None:
            body["end"] = StreamToken(events=end).encode()
        if event_filter.lazy_load_members and chunk:
            body["state"] = await self._member_state(user_id, device_id, room_id, chunk, visible)
        return body

    async def _wanted(
        self, user_id: str, room_id: str, batch: list[PersistedEvent], event_filter: RoomEventFilter
    ) -> list[PersistedEvent]:
        kept = [
            pe
            for pe in batch
            if event_filter.allows_event(pe.event.type, pe.event.sender, room_id, pe.event.content)
        ]
        return await self._visible(user_id, kept)

    async def _member_state(
        self, user_id: str, device_id: str, room_id: str, chunk: list[PersistedEvent], visible: int
    ) -> list[dict[str, Any]]:
        """Lazy-loading: the member events of the chunk's senders, as of its newest event."""
        if self.sync_store is None:
            return []
        senders = sorted({pe.event.sender for pe in chunk})
        newest = min(max(pe.stream_ordering for pe in chunk), visible)
        reader = RoomStateReader(self.sync_store, self.extras.get("state_store"))
        ids = await reader.state_at(room_id, newest, [(MEMBER, s) for s in senders])
        events = await self.store.get_events(list(ids.values()))
        ordered = sorted(events.values(), key=lambda pe: pe.stream_ordering)
        return await self._serialize(ordered, user_id, device_id)

    async def _serialize(
        self, events: list[PersistedEvent], user_id: str, device_id: str
    ) -> list[dict[str, Any]]:
        if not events:
            return []
        serializer = self.extras.get("serializer")
        if serializer is not None:
            result: list[dict[str, Any]] = await serializer.serialize_many(
                events, user_id, device_id
            )
            return result
        now = self.clock_ms()
        return [serialize_event(pe, now, for_device=(user_id, device_id)) for pe in events]


def messages_handler(ctx: HomeServerContext) -> MessagesHandler:
    """The process's MessagesHandler, shared through ctx.extras["messages_handler"]."""
    existing = ctx.extras.get("messages_handler")
    if isinstance(existing, MessagesHandler):
        return existing
    made = MessagesHandler(
        ctx.event_store,
        ctx.events_tracker,
        ctx.clock_ms,
        extras=ctx.extras,
        sync_store=SyncStore(ctx.db),
        max_scan=DEFAULT_MAX_SCAN,
    )
    ctx.extras["messages_handler"] = made
    return made
