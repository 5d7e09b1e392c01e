"""Reading room history: /messages pagination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.events.client_format import serialize_event
from homeserver.http.errors import forbidden
from homeserver.sync.tokens import StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore


class MessagesHandler:
    def __init__(self, store: EventStore, tracker: StreamPositionTracker, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.tracker = tracker
        self.clock_ms = clock_ms

    async def _visible_until(self, user_id: str, room_id: str) -> int:
        """The newest stream position of the room the user may read."""
        rooms = await self.store.get_rooms_for_user(user_id)
        membership = rooms.get(room_id)
        if membership == "join":
            return self.tracker.position
        if membership in ("leave", "ban"):
            changes = await self.store.get_membership_changes(user_id, 0, self.tracker.position)
            left_at = [pos for rid, m, pos in changes if rid == room_id and m in ("leave", "ban")]
            if left_at:
                return left_at[-1]
        raise forbidden("You are not a member of this room")

    async def paginate(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        from_token: StreamToken | None,
        to_token: StreamToken | None,
        direction: str,
        limit: int,
    ) -> dict[str, Any]:
        visible = await self._visible_until(user_id, room_id)
        now = self.clock_ms()
        if direction == "b":
            start = min(from_token.events if from_token else visible, visible)
            floor = to_token.events if to_token else 0
            events = await self.store.get_room_events_backwards(room_id, start, floor, limit)
            end = StreamToken(events=events[-1].stream_ordering - 1) if len(events) == limit else None
        else:
            start = from_token.events if from_token else 0
            ceiling = min(to_token.events if to_token else visible, visible)
            events = await self.store.get_room_events_forwards(room_id, start, ceiling, limit)
            end = StreamToken(events=events[-1].stream_ordering) if len(events) == limit else None
        body: dict[str, Any] = {
            "start": StreamToken(events=start).encode(),
            "chunk": [serialize_event(pe, now, for_device=(user_id, device_id)) for pe in events],
        }
        if end is not None:
            body["end"] = end.encode()
        return body
