"""Reading rooms: single events, context, state, members and timestamps (every process).

Every answer goes through the visibility rules (`VisibilityFilter`): an event the user may
not see is reported as not found, and room state is the current state for joined users
(and anyone while the room is world_readable) or the state as of a former member's
departure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from homeserver.events.client_format import serialize_event
from homeserver.events.event import StateKey
from homeserver.handlers.visibility import RoomStateAccess, RoomTimeline, VisibilityFilter
from homeserver.http.errors import forbidden, not_found
from homeserver.sync.filters import RoomEventFilter
from homeserver.sync.tokens import StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.room_extras import MEMBER, RoomExtrasStore, StateFilter, state_key_matches
from storage.stores.state import StateNotFoundError, StateStore

Device = tuple[str, str]
# Events read per query while scanning for visible ones.
SCAN_BATCH = 100
# Rows a single /context scan may examine per direction before it stops (with a token).
MAX_SCANNED_ROWS = 2_000
# Candidate events examined by /timestamp_to_event.
TIMESTAMP_CANDIDATES = 100
MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})


class RoomReadHandler:
    def __init__(
        self,
        store: EventStore,
        extras: RoomExtrasStore,
        visibility: VisibilityFilter,
        tracker: StreamPositionTracker,
        clock_ms: Callable[[], int],
        *,
        state_store: StateStore | None = None,
        serializer: Callable[[], Any] = lambda: None,
    ) -> None:
        self.store = store
        self.extras = extras
        self.visibility = visibility
        self.tracker = tracker
        self.clock_ms = clock_ms
        self.state_store = state_store
        # The shared EventSerializer (redactions, aggregations, prev_content) once its
        # module has installed it; plain client format until then.
        self.serializer = serializer

    async def _serialize(
        self, events: Sequence[PersistedEvent], device: Device
    ) -> list[dict[str, Any]]:
        serializer = self.serializer()
        if serializer is not None:
            result: list[dict[str, Any]] = await serializer.serialize_many(
                list(events), device[0], device[1]
            )
            return result
        now = self.clock_ms()
        return [serialize_event(pe, now, for_device=device) for pe in events]

    async def visible_event(self, user_id: str, room_id: str, event_id: str) -> PersistedEvent:
        """The event, if it is in this room and the user may see it; else 404."""
        pe = await self.store.get_event(event_id)
        if pe is None or pe.event.room_id != room_id:
            raise not_found("Event not found")
        if not await self.visibility.can_see_event(user_id, pe):
            raise not_found("Event not found or you may not see it")
        return pe

    async def get_event(self, device: Device, room_id: str, event_id: str) -> dict[str, Any]:
        pe = await self.visible_event(device[0], room_id, event_id)
        return (await self._serialize([pe], device))[0]

    # -- state ----------------------------------------------------------------------------

    async def _state_ids(
        self, access: RoomStateAccess, pos: int | None = None, types: StateFilter | None = None
    ) -> dict[StateKey, str]:
        """The state the access grants, or as of stream position `pos` if that is earlier."""
        if pos is None or (access.at_stream is not None and pos >= access.at_stream):
            if access.at_event_id is not None:
                return await self._state_after_event(access.room_id, access.at_event_id, types)
            if access.at_stream is None:
                ids = await self.store.get_current_state_ids(access.room_id)
                return {k: v for k, v in ids.items() if state_key_matches(k, types)}
        at = access.cap(pos if pos is not None else self.tracker.position)
        event_id = await self.extras.get_latest_event_id_at(access.room_id, at)
        if event_id is None:
            return {}
        return await self._state_after_event(access.room_id, event_id, types)

    async def _state_after_event(
        self, room_id: str, event_id: str, types: StateFilter | None = None
    ) -> dict[StateKey, str]:
        if self.state_store is not None:
            try:
                return await self.state_store.get_state_ids_after(event_id, types)
            except StateNotFoundError:
                pass
        pe = await self.store.get_event(event_id)
        if pe is None:
            return {}
        return await self.extras.get_state_ids_at_stream(room_id, pe.stream_ordering, types)

    async def get_state(self, device: Device, room_id: str) -> list[dict[str, Any]]:
        access = await self.visibility.check_user_can_see_room_state(device[0], room_id)
        ids = await self._state_ids(access)
        events = await self.store.get_events(list(ids.values()))
        ordered = sorted(events.values(), key=lambda pe: pe.stream_ordering)
        return await self._serialize(ordered, device)

    async def get_state_event(
        self, device: Device, room_id: str, event_type: str, state_key: str
    ) -> PersistedEvent:
        access = await self.visibility.check_user_can_see_room_state(device[0], room_id)
        ids = await self._state_ids(access, types=[(event_type, state_key)])
        event_id = ids.get((event_type, state_key))
        pe = await self.store.get_event(event_id) if event_id is not None else None
        if pe is None:
            raise not_found(f"Room has no {event_type} state with key {state_key!r}")
        return pe

    async def serialize_one(self, pe: PersistedEvent, device: Device) -> dict[str, Any]:
        return (await self._serialize([pe], device))[0]

    # -- members ----------------------------------------------------------------------------

    async def get_members(
        self,
        device: Device,
        room_id: str,
        at: StreamToken | None,
        membership: str | None,
        not_membership: str | None,
    ) -> dict[str, Any]:
        access = await self.visibility.check_user_can_see_room_state(device[0], room_id)
        ids = await self._state_ids(access, at.events if at is not None else None, [(MEMBER, None)])
        events = await self.store.get_events(list(ids.values()))
        chunk = []
        for pe in sorted(events.values(), key=lambda pe: pe.event.state_key or ""):
            value = pe.event.membership
            if membership is not None and value != membership:
                continue
            if not_membership is not None and value == not_membership:
                continue
            chunk.append(pe)
        return {"chunk": await self._serialize(chunk, device)}

    async def get_joined_members(self, user_id: str, room_id: str) -> dict[str, Any]:
        access = await self.visibility.check_user_can_see_room_state(user_id, room_id)
        if access.membership != "join":
            raise forbidden("You are not joined to this room")
        ids = await self.extras.get_current_member_event_ids(
            room_id, await self.extras.get_joined_user_ids(room_id)
        )
        events = await self.store.get_events(list(ids.values()))
        joined: dict[str, dict[str, str]] = {}
        for user, event_id in sorted(ids.items()):
            pe = events.get(event_id)
            profile: dict[str, str] = {}
            if pe is not None:
                for key, out_key in (("displayname", "display_name"), ("avatar_url", "avatar_url")):
                    value = pe.event.content.get(key)
                    if isinstance(value, str):
                        profile[out_key] = value
            joined[user] = profile
        return {"joined": joined}

    async def get_joined_rooms(self, user_id: str) -> dict[str, Any]:
        rooms = await self.store.get_rooms_for_user(user_id)
        return {"joined_rooms": sorted(r for r, m in rooms.items() if m == "join")}

    # -- context ------------------------------------------------------------------------------

    async def get_context(
        self,
        device: Device,
        room_id: str,
        event_id: str,
        limit: int,
        event_filter: RoomEventFilter | None,
    ) -> dict[str, Any]:
        user_id = device[0]
        pe = await self.visible_event(user_id, room_id, event_id)
        timeline = await self.visibility.room_timeline(user_id, room_id)
        before_limit = limit // 2
        before, start = await self._scan_backwards(
            user_id, timeline, room_id, pe.stream_ordering - 1, before_limit, event_filter
        )
        after, end = await self._scan_forwards(
            user_id, timeline, room_id, pe.stream_ordering, limit - before_limit, event_filter
        )
        last = after[-1] if after else pe
        state_ids = await self._state_after_event(room_id, last.event.event_id)
        if event_filter is not None and event_filter.lazy_load_members:
            # Only the members who sent the returned events.
            senders = {e.event.sender for e in (*before, pe, *after)}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != MEMBER or k[1] in senders}
        state_events = await self.store.get_events(list(state_ids.values()))
        state = sorted(state_events.values(), key=lambda e: e.stream_ordering)
        return {
            "start": StreamToken(events=start).encode(),
            "end": StreamToken(events=end).encode(),
            "events_before": await self._serialize(before, device),
            "event": (await self._serialize([pe], device))[0],
            "events_after": await self._serialize(after, device),
            "state": await self._serialize(state, device),
        }

    @staticmethod
    def _wanted(
        pe: PersistedEvent,
        user_id: str,
        timeline: RoomTimeline,
        event_filter: RoomEventFilter | None,
    ) -> bool:
        event = pe.event
        if event_filter is not None and not event_filter.allows_event(
            event.type, event.sender, event.room_id, event.content
        ):
            return False
        return timeline.allows(pe, user_id)

    async def _scan_backwards(
        self,
        user_id: str,
        timeline: RoomTimeline,
        room_id: str,
        from_pos: int,
        want: int,
        event_filter: RoomEventFilter | None,
    ) -> tuple[list[PersistedEvent], int]:
        """Up to `want` wanted events at or before `from_pos`, newest first; and the token
        position from which to paginate further back."""
        found: list[PersistedEvent] = []
        cursor = from_pos
        scanned = 0
        while len(found) < want and cursor > 0 and scanned < MAX_SCANNED_ROWS:
            batch = await self.store.get_room_events_backwards(room_id, cursor, 0, SCAN_BATCH)
            if not batch:
                cursor = 0
                break
            for pe in batch:
                scanned += 1
                cursor = pe.stream_ordering - 1
                if self._wanted(pe, user_id, timeline, event_filter):
                    found.append(pe)
                    if len(found) == want:
                        break
        return found, max(cursor, 0)

    async def _scan_forwards(
        self,
        user_id: str,
        timeline: RoomTimeline,
        room_id: str,
        after_pos: int,
        want: int,
        event_filter: RoomEventFilter | None,
    ) -> tuple[list[PersistedEvent], int]:
        """Up to `want` wanted events after `after_pos`, oldest first; and the token position
        from which to paginate further forwards."""
        found: list[PersistedEvent] = []
        ceiling = self.tracker.position
        cursor = after_pos
        scanned = 0
        while len(found) < want and cursor < ceiling and scanned < MAX_SCANNED_ROWS:
            batch = await self.store.get_room_events_forwards(room_id, cursor, ceiling, SCAN_BATCH)
            if not batch:
                cursor = ceiling
                break
            for pe in batch:
                scanned += 1
                cursor = pe.stream_ordering
                if self._wanted(pe, user_id, timeline, event_filter):
                    found.append(pe)
                    if len(found) == want:
                        break
        return found, max(cursor, after_pos)

    # -- timestamps ------------------------------------------------------------------------------

    async def timestamp_to_event(
        self, user_id: str, room_id: str, ts: int, forwards: bool
    ) -> dict[str, Any]:
        await self.visibility.check_user_can_see_room_state(user_id, room_id)
        candidates = await self.extras.get_event_ids_near_timestamp(
            room_id, ts, forwards, TIMESTAMP_CANDIDATES
        )
        events = await self.store.get_events([eid for eid, _ in candidates])
        ordered = [events[eid] for eid, _ in candidates if eid in events]
        visible = await self.visibility.filter_events_for_user(user_id, ordered)
        if not visible:
            raise not_found(f"No event found {'after' if forwards else 'before'} {ts}")
        return {
            "event_id": visible[0].event.event_id,
            "origin_server_ts": visible[0].event.origin_server_ts,
        }
