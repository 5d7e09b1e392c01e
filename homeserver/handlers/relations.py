"""Relations and threads: the /relations and /threads APIs, and the send-path rules for
redactions, threads and annotations (called by EventCreationHandler.send)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from homeserver.events.auth import get_named_level, get_user_power_level
from homeserver.events.event import Event, StateKey
from homeserver.handlers.event_serializer import EventSerializer
from homeserver.handlers.visibility import VisibilityFilter
from homeserver.http.errors import MatrixError, forbidden, not_found
from homeserver.sync.tokens import StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore
from storage.stores.relations import ANNOTATION, THREAD, RelationsStore, parse_relation

JsonDict = dict[str, Any]

# The *redact level* when the power levels do not name one.
DEFAULT_REDACT_LEVEL = 50


@attrs.frozen(slots=True)
class RelationsQuery:
    room_id: str
    event_id: str
    rel_type: str | None
    event_type: str | None
    from_token: StreamToken | None
    to_token: StreamToken | None
    # "b" (newest first) or "f".
    direction: str
    limit: int
    # None: the client did not pass `recurse`.
    recurse: bool | None


class RelationsHandler:
    def __init__(
        self,
        store: EventStore,
        relations: RelationsStore,
        serializer: EventSerializer,
        visibility: VisibilityFilter,
        tracker: StreamPositionTracker,
        recursion_depth: int,
    ) -> None:
        self.store = store
        self.relations = relations
        self.serializer = serializer
        self.visibility = visibility
        self.tracker = tracker
        self.recursion_depth = recursion_depth

    async def get_relations(
        self, user_id: str, device_id: str | None, q: RelationsQuery
    ) -> JsonDict:
        parent = await self.store.get_event(q.event_id)
        if (
            parent is None
            or parent.event.room_id != q.room_id
            or not await self.visibility.can_see_event(user_id, parent)
        ):
            # The same answer whether the event is missing or hidden from this user.
            raise not_found("Event not found")
        depth = self.recursion_depth if q.recurse else 1
        now = self.tracker.position
        if q.direction == "b":
            up_to = min(q.from_token.events, now) if q.from_token else now
            after = q.to_token.events if q.to_token else 0
        else:
            after = q.from_token.events if q.from_token else 0
            up_to = min(q.to_token.events, now) if q.to_token else now
        rows = await self.relations.get_children(
            q.event_id,
            q.room_id,
            rel_type=q.rel_type,
            event_type=q.event_type,
            after=after,
            up_to=up_to,
            newest_first=q.direction == "b",
            limit=q.limit + 1,
            depth=depth,
        )
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        loaded = await self.store.get_events([eid for eid, _ in rows])
        events = await self.visibility.filter_events_for_user(
            user_id, [loaded[eid] for eid, _ in rows if eid in loaded]
        )
        body: JsonDict = {"chunk": await self.serializer.serialize_many(events, user_id, device_id)}
        if more and rows:
            last = rows[-1][1]
            body["next_batch"] = StreamToken(
                events=last - 1 if q.direction == "b" else last
            ).encode()
        if q.from_token is not None:
            body["prev_batch"] = q.from_token.encode()
        if q.recurse is not None:
            body["recursion_depth"] = depth
        return body

    async def get_threads(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        *,
        participated_only: bool,
        from_token: StreamToken | None,
        limit: int,
    ) -> JsonDict:
        # 403 unless a member, a former member (history up to leaving) or world_readable.
        access = await self.visibility.check_user_can_see_room_state(user_id, room_id)
        visible = access.cap(self.tracker.position)
        before = from_token.events if from_token is not None else visible + 1
        rows = await self.relations.get_thread_roots(
            room_id,
            before=before,
            up_to=visible,
            participant=user_id if participated_only else None,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        loaded = await self.store.get_events([eid for eid, _ in rows])
        roots = await self.visibility.filter_events_for_user(
            user_id, [loaded[eid] for eid, _ in rows if eid in loaded]
        )
        body: JsonDict = {"chunk": await self.serializer.serialize_many(roots, user_id, device_id)}
        if more and rows:
            body["next_batch"] = StreamToken(events=rows[-1][1]).encode()
        return body


# ----------------------------------------------------------------- send path --


async def validate_new_event(
    store: EventStore,
    event: Event,
    auth_state: Mapping[StateKey, Event],
) -> None:
    """Rules for a locally sent event beyond the auth rules; raises MatrixError.

    * m.room.redaction: the sender may redact their own events; anyone else's needs the
      *redact level* ("handling redactions", room versions 3+; applied to every version
      for local senders). A target not in this room needs the redact level too.
    * m.thread: the thread root must not itself have a relation (400 M_UNKNOWN).
    * m.annotation: one per (parent, sender, type, key) (400 M_DUPLICATE_ANNOTATION).
    """
    if event.type == "m.room.redaction":
        target_id = event.redacts
        if target_id is not None:
            await _check_redaction(store, event, target_id, auth_state)
    relation = parse_relation(event.content)
    if relation is None:
        return
    if relation.rel_type == THREAD:
        root = await store.get_event(relation.parent_id)
        if root is not None and root.event.room_id == event.room_id:
            if parse_relation(root.event.content) is not None:
                raise MatrixError(
                    400, "M_UNKNOWN", "Cannot start a thread from an event with a relation"
                )
    elif relation.rel_type == ANNOTATION and relation.key is not None:
        if await RelationsStore(store.db).has_annotation(
            relation.parent_id, event.room_id, event.sender, event.type, relation.key
        ):
            raise MatrixError(
                400,
                "M_DUPLICATE_ANNOTATION",
                "You have already sent this annotation for this event",
            )


async def _check_redaction(
    store: EventStore, event: Event, target_id: str, auth_state: Mapping[StateKey, Event]
) -> None:
    sender_level = get_user_power_level(event.sender, auth_state)
    if sender_level >= get_named_level(auth_state, "redact", DEFAULT_REDACT_LEVEL):
        return
    target = await store.get_event(target_id)
    if target is None or target.event.room_id != event.room_id:
        raise not_found("Event to redact not found")
    if target.event.sender != event.sender:
        raise forbidden("You may only redact your own events")
