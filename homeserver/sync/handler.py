"""SyncHandler: computes /sync responses from the stores, and long-polls on the notifier."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs

from homeserver.events.client_format import is_stripped_type, serialize_event, stripped_state
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.sync.tokens import StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore, PersistedEvent

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


@attrs.frozen(slots=True)
class SyncRequest:
    user_id: str
    device_id: str
    since: StreamToken | None
    timeout_ms: int
    full_state: bool
    timeline_limit: int


class SyncHandler:
    def __init__(
        self,
        store: EventStore,
        notifier: Notifier,
        tracker: StreamPositionTracker,
        clock_ms: Callable[[], int],
        catch_up_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.tracker = tracker
        self.clock_ms = clock_ms
        self.catch_up_timeout_s = catch_up_timeout_s

    async def sync(self, req: SyncRequest) -> JsonDict:
        if req.since is not None and req.since.events > self.tracker.position:
            if req.since.events > self.tracker.writer_position:
                # The writer may simply not have told us yet (e.g. the client moved
                # worker): wait a little, then call the token bad.
                await self.tracker.wait_for(req.since.events, self.catch_up_timeout_s)
                if req.since.events > self.tracker.position:
                    raise MatrixError(400, "M_INVALID_PARAM", "since token is from the future")
            else:
                await self.tracker.wait_for(req.since.events, self.catch_up_timeout_s)

        deadline_ms = self.clock_ms() + req.timeout_ms
        while True:
            rooms = await self.store.get_rooms_for_user(req.user_id)
            listener = None
            if req.since is not None and not req.full_state and req.timeout_ms > 0:
                # Listen before computing, so nothing that lands meanwhile is missed.
                listener = self.notifier.listen(
                    req.user_id, [r for r, m in rooms.items() if m in ("join", "invite")]
                )
            try:
                pos = self.tracker.position
                response, has_data = await self._compute(req, pos, list(rooms))
                remaining_ms = deadline_ms - self.clock_ms()
                if has_data or listener is None or remaining_ms <= 0:
                    return response
                woken = await listener.wait(remaining_ms / 1000.0)
            finally:
                if listener is not None:
                    listener.close()
            if not woken:
                response, _ = await self._compute(req, self.tracker.position, list(rooms))
                return response

    async def _compute(self, req: SyncRequest, pos: int, room_ids: list[str]) -> tuple[JsonDict, bool]:
        since = req.since.events if req.since is not None and not req.full_state else None
        next_pos = max(pos, req.since.events if req.since is not None else 0)
        memberships = await self.store.get_membership_at(req.user_id, room_ids, pos)
        join: JsonDict = {}
        invite: JsonDict = {}
        leave: JsonDict = {}
        device = (req.user_id, req.device_id)

        if since is None:
            for room_id, membership in memberships.items():
                if membership == "join":
                    join[room_id] = await self._room(room_id, None, pos, req.timeline_limit, device)
                elif membership == "invite":
                    invite[room_id] = await self._invite(room_id)
        else:
            changes = await self.store.get_membership_changes(req.user_id, since, pos)
            changed_membership = {room_id: m for room_id, m, _ in changes}
            was = await self.store.get_membership_at(req.user_id, list(changed_membership), since)
            joined_now = [r for r, m in memberships.items() if m == "join"]
            changed_rooms = await self.store.get_rooms_changed(joined_now, since, pos)
            for room_id in joined_now:
                if room_id in changed_membership and was.get(room_id) != "join":
                    join[room_id] = await self._room(room_id, None, pos, req.timeline_limit, device)
                elif room_id in changed_rooms:
                    join[room_id] = await self._room(room_id, since, pos, req.timeline_limit, device)
            for room_id, membership in changed_membership.items():
                if membership == "invite" and memberships.get(room_id) == "invite":
                    invite[room_id] = await self._invite(room_id)
                elif membership in ("leave", "ban") and was.get(room_id) in ("join", "invite"):
                    leave[room_id] = await self._room(room_id, since, pos, req.timeline_limit, device)

        rooms: JsonDict = {"join": join, "invite": invite, "leave": leave, "knock": {}}
        response: JsonDict = {
            "next_batch": StreamToken(events=next_pos).encode(),
            "rooms": rooms,
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
        }
        return response, bool(join or invite or leave)

    async def _room(
        self, room_id: str, since: int | None, pos: int, limit: int, device: tuple[str, str]
    ) -> JsonDict:
        newest = await self.store.get_room_events_backwards(room_id, pos, since or 0, limit + 1)
        limited = len(newest) > limit
        timeline = list(reversed(newest[:limit]))
        start = timeline[0].stream_ordering - 1 if timeline else pos
        if since is None:
            current = await self.store.get_current_state(room_id)
            in_timeline = {pe.event.event_id for pe in timeline}
            state = [pe for pe in current.values() if pe.event.event_id not in in_timeline]
        elif limited:
            gap = await self.store.get_state_events_between(room_id, since, start)
            latest: dict[tuple[str, str], PersistedEvent] = {}
            for pe in gap:
                latest[pe.event.key] = pe
            state = list(latest.values())
        else:
            state = []
        now = self.clock_ms()
        state.sort(key=lambda pe: pe.stream_ordering)
        return {
            "timeline": {
                "events": [serialize_event(pe, now, for_device=device) for pe in timeline],
                "limited": limited,
                "prev_batch": StreamToken(events=start).encode(),
            },
            "state": {"events": [serialize_event(pe, now) for pe in state]},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {"highlight_count": 0, "notification_count": 0},
            "summary": {},
        }

    async def _invite(self, room_id: str) -> JsonDict:
        current = await self.store.get_current_state(room_id)
        chosen = [pe for key, pe in current.items() if is_stripped_type(key[0])]
        return {"invite_state": {"events": stripped_state(chosen)}}
