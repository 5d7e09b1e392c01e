"""EventSerializer: serves batches of events to a client, with everything the spec adds.

For a batch it loads, in a few queries for the whole batch: applied redactions (the event
is served redacted with `unsigned.redacted_because`), bundled aggregations
(`unsigned["m.relations"]`: m.replace, m.thread, m.reference), the state event each state
event replaced (`replaces_state`, `prev_content`, `prev_sender`) and the requesting user's
membership at each event (`unsigned.membership`). `client_format.serialize_event` then
shapes each event from that.

Registered as `ctx.extras["serializer"]` by homeserver.rest.relations.install.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from homeserver.events.client_format import EventExtras, serialize_event
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.relations import REFERENCE, REPLACE, THREAD, RelationsStore, parse_relation

SERIALIZER_KEY = "serializer"

JsonDict = dict[str, Any]


class EventSerializer:
    def __init__(
        self, store: EventStore, relations: RelationsStore, clock_ms: Callable[[], int]
    ) -> None:
        self.store = store
        self.relations = relations
        self.clock_ms = clock_ms

    async def serialize_one(
        self,
        event: PersistedEvent,
        requester_user_id: str | None,
        device_id: str | None = None,
        *,
        bundle_aggregations: bool = True,
    ) -> JsonDict:
        return (
            await self.serialize_many(
                [event], requester_user_id, device_id, bundle_aggregations=bundle_aggregations
            )
        )[0]

    async def serialize_many(
        self,
        events: Sequence[PersistedEvent],
        requester_user_id: str | None,
        device_id: str | None = None,
        *,
        bundle_aggregations: bool = True,
    ) -> list[JsonDict]:
        """The events in client format, in the order given.

        `requester_user_id` decides `unsigned.membership`, `current_user_participated`
        and (with `device_id`) `unsigned.transaction_id`. `bundle_aggregations=False`
        leaves out `m.relations` (e.g. for /sync timelines that are not limited).
        """
        return await self._serialize(
            events,
            requester_user_id,
            device_id,
            self.clock_ms(),
            bundle=bundle_aggregations,
            nested=False,
        )

    async def _serialize(
        self,
        events: Sequence[PersistedEvent],
        user_id: str | None,
        device_id: str | None,
        now: int,
        *,
        bundle: bool,
        nested: bool,
    ) -> list[JsonDict]:
        if not events:
            return []
        for_device = (user_id, device_id) if user_id is not None and device_id is not None else None
        ids = [pe.event.event_id for pe in events]
        redaction_rows = await self.relations.get_redactions(ids)
        redaction_of: dict[str, str] = {}
        for pe in events:
            for redaction_id, room_id in redaction_rows.get(pe.event.event_id, ()):
                if room_id == pe.event.room_id:
                    redaction_of[pe.event.event_id] = redaction_id
                    break

        state_ids = [pe.event.event_id for pe in events if pe.event.state_key is not None]
        replaced_of = await self.relations.get_replaced_state(state_ids)

        # State events get no bundled aggregations (the spec's current rule).
        parents = [pe for pe in events if pe.event.state_key is None] if bundle else []
        bundle_data = await self.relations.get_bundle_data(
            [pe.event.event_id for pe in parents], user_id
        )
        if nested:
            # latest_event of a thread is bundled one level deep only (threads do not nest).
            bundle_data.threads.clear()

        wanted = {
            *redaction_of.values(),
            *replaced_of.values(),
            *bundle_data.latest_edit.values(),
            *(t.latest_event_id for t in bundle_data.threads.values() if t.latest_event_id),
        }
        loaded = await self.store.get_events(wanted)
        replaced_redacted = await self._redacted_ids(
            [loaded[eid] for eid in replaced_of.values() if eid in loaded]
        )

        latest_thread_events = [
            loaded[t.latest_event_id]
            for t in bundle_data.threads.values()
            if t.latest_event_id is not None and t.latest_event_id in loaded
        ]
        latest_serialized: dict[str, JsonDict] = {}
        if latest_thread_events:
            for pe, js in zip(
                latest_thread_events,
                await self._serialize(
                    latest_thread_events, user_id, device_id, now, bundle=True, nested=True
                ),
                strict=True,
            ):
                latest_serialized[pe.event.event_id] = js

        memberships = await self._memberships(events, user_id)

        out: list[JsonDict] = []
        for pe, membership in zip(events, memberships, strict=True):
            event_id = pe.event.event_id
            redaction = loaded.get(redaction_of.get(event_id, ""))
            relations: JsonDict = {}
            if bundle and pe.event.state_key is None:
                edit = loaded.get(bundle_data.latest_edit.get(event_id, ""))
                # A redacted original bundles no edit; an edit of an edit is no edit.
                if edit is not None and redaction is None and not _is_replacement(pe):
                    relations[REPLACE] = serialize_event(edit, now, for_device=for_device)
                thread = bundle_data.threads.get(event_id)
                if thread is not None and thread.latest_event_id in latest_serialized:
                    relations[THREAD] = {
                        "latest_event": latest_serialized[thread.latest_event_id],
                        "count": thread.count,
                        "current_user_participated": thread.user_replied
                        or (user_id is not None and pe.event.sender == user_id),
                    }
                refs = bundle_data.references.get(event_id)
                if refs:
                    relations[REFERENCE] = {"chunk": [{"event_id": r} for r in refs]}
            replaced = loaded.get(replaced_of.get(event_id, ""))
            extras = EventExtras(
                redacted_because=serialize_event(redaction, now, for_device=for_device)
                if redaction is not None
                else None,
                relations=relations or None,
                replaces_state=replaced,
                replaced_state_redacted=replaced is not None
                and replaced.event.event_id in replaced_redacted,
                membership=membership,
            )
            out.append(serialize_event(pe, now, for_device=for_device, extras=extras))
        return out

    async def _redacted_ids(self, events: Sequence[PersistedEvent]) -> set[str]:
        rows = await self.relations.get_redactions([pe.event.event_id for pe in events])
        return {
            pe.event.event_id
            for pe in events
            if any(room == pe.event.room_id for _, room in rows.get(pe.event.event_id, ()))
        }

    async def _memberships(
        self, events: Sequence[PersistedEvent], user_id: str | None
    ) -> list[str | None]:
        """The user's membership at each event, counting the event itself; "leave" before any."""
        if user_id is None:
            return [None] * len(events)
        history = await self.relations.get_membership_history(
            user_id,
            {pe.event.room_id for pe in events},
            max(pe.stream_ordering for pe in events),
        )
        out: list[str | None] = []
        for pe in events:
            changes = history.get(pe.event.room_id, [])
            i = bisect.bisect_right(changes, pe.stream_ordering, key=lambda c: c[0])
            out.append(changes[i - 1][1] if i > 0 else "leave")
        return out


def _is_replacement(pe: PersistedEvent) -> bool:
    relation = parse_relation(pe.event.content)
    return relation is not None and relation.rel_type == REPLACE
