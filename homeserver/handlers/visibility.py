"""History visibility: which events, and which room state, a user may read.

The rules (client-server API, "Room History Visibility") are applied with the room as it
was *at each event*: the `m.room.history_visibility` in force and the user's membership.
That state comes from the state store (state groups: the state after, and before, each
event). Without one (or for events stored without a state group) it comes from the
events stream, which on this server orders each room's DAG topologically, so the state
after event E is the newest state at or before E's stream position. "Joined at some
point after the event" is read from the user's membership events in stream order.

For `m.room.history_visibility` events themselves, and for the user's own member
events, the state before *or* after the event may grant access.

Shared by every read path: register with `VisibilityFilter.install(ctx)` and fetch with
`ctx.extras["visibility"]`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from homeserver.events.event import StateKey
from homeserver.http.errors import forbidden
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.room_extras import HISTORY_VISIBILITY, MEMBER, MembershipRow, RoomExtrasStore
from storage.stores.state import StateNotFoundError, StateStore
from storage.stores.sync import SyncStore, UserMembership

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
KNOWN_VISIBILITIES = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})
# What applies when no history_visibility is set or its value is not understood.
DEFAULT_VISIBILITY = SHARED


def normalise_visibility(value: str | None) -> str:
    return value if value in KNOWN_VISIBILITIES else DEFAULT_VISIBILITY


def visibility_allows(visibility: str, membership: str | None, joined_after: bool) -> bool:
    """The four rules, for one (history_visibility, membership) pair at an event.

    `joined_after`: the user joined the room at some point after the event was sent.
    """
    if visibility == WORLD_READABLE:
        return True
    if membership == "join":
        return True
    if visibility == SHARED and joined_after:
        return True
    return membership == "invite" and visibility == INVITED


@attrs.frozen(slots=True)
class RoomTimeline:
    """A room's history-visibility and one user's membership changes, by stream position."""

    visibility_positions: tuple[int, ...]
    visibility_values: tuple[str, ...]
    membership_positions: tuple[int, ...]
    memberships: tuple[str, ...]

    @classmethod
    def build(
        cls,
        visibility_changes: Sequence[tuple[int, str | None]],
        memberships: Sequence[MembershipRow],
    ) -> RoomTimeline:
        return cls(
            tuple(p for p, _ in visibility_changes),
            tuple(normalise_visibility(v) for _, v in visibility_changes),
            tuple(m.stream_ordering for m in memberships),
            tuple(m.membership for m in memberships),
        )

    def visibility_at(self, pos: int, *, inclusive: bool = True) -> str:
        """In force after (inclusive) or just before the event at `pos`."""
        find = bisect.bisect_right if inclusive else bisect.bisect_left
        i = find(self.visibility_positions, pos)
        return self.visibility_values[i - 1] if i else DEFAULT_VISIBILITY

    def membership_at(self, pos: int, *, inclusive: bool = True) -> str | None:
        find = bisect.bisect_right if inclusive else bisect.bisect_left
        i = find(self.membership_positions, pos)
        return self.memberships[i - 1] if i else None

    def joined_after(self, pos: int) -> bool:
        i = bisect.bisect_right(self.membership_positions, pos)
        return "join" in self.memberships[i:]

    def facts(self, pe: PersistedEvent) -> EventFacts:
        pos = pe.stream_ordering
        return EventFacts(
            self.visibility_at(pos),
            self.membership_at(pos),
            self.visibility_at(pos, inclusive=False),
            self.membership_at(pos, inclusive=False),
            self.joined_after(pos),
        )

    def allows(self, pe: PersistedEvent, user_id: str) -> bool:
        return event_allowed(pe, user_id, self.facts(pe))


@attrs.frozen(slots=True)
class EventFacts:
    """What the rules consult about one event, for one user."""

    visibility_after: str
    membership_after: str | None
    visibility_before: str
    membership_before: str | None
    joined_after: bool


def event_allowed(pe: PersistedEvent, user_id: str, facts: EventFacts) -> bool:
    event = pe.event
    if visibility_allows(facts.visibility_after, facts.membership_after, facts.joined_after):
        return True
    if event.type == HISTORY_VISIBILITY and event.state_key == "":
        return visibility_allows(
            facts.visibility_before, facts.membership_after, facts.joined_after
        )
    if event.type == MEMBER and event.state_key == user_id:
        return visibility_allows(
            facts.visibility_after, facts.membership_before, facts.joined_after
        )
    return False


def _needs_state_before(pe: PersistedEvent, user_id: str) -> bool:
    event = pe.event
    return (event.type == HISTORY_VISIBILITY and event.state_key == "") or (
        event.type == MEMBER and event.state_key == user_id
    )


@attrs.frozen(slots=True)
class RoomStateAccess:
    """Which state of a room a user may read.

    `at_stream` None: the current state. Otherwise the state as of that stream position
    (the user's departure: former members see the room as it was when they left).
    """

    room_id: str
    membership: str | None
    at_stream: int | None
    # The user's departure event, when at_stream is set.
    at_event_id: str | None = None
    world_readable: bool = False

    def cap(self, pos: int) -> int:
        return pos if self.at_stream is None else min(pos, self.at_stream)


class VisibilityFilter:
    def __init__(
        self,
        store: EventStore,
        extras: RoomExtrasStore,
        state_store: StateStore | None = None,
        sync_store: SyncStore | None = None,
    ) -> None:
        self.store = store
        self.extras = extras
        self.state_store = state_store
        # Reads for many rooms in one query.
        self.sync_store = sync_store if sync_store is not None else SyncStore(extras.db)

    @classmethod
    def install(cls, ctx: HomeServerContext) -> VisibilityFilter:
        """The process's shared filter, created on first use."""
        existing = ctx.extras.get("visibility")
        if isinstance(existing, VisibilityFilter):
            return existing
        state_store = ctx.extras.get("state_store")
        made = cls(
            ctx.event_store,
            RoomExtrasStore(ctx.db),
            state_store if isinstance(state_store, StateStore) else None,
        )
        ctx.extras["visibility"] = made
        return made

    async def room_timeline(self, user_id: str, room_id: str) -> RoomTimeline:
        return RoomTimeline.build(
            await self.extras.get_history_visibility_changes(room_id),
            await self.extras.get_user_memberships(user_id, room_id),
        )

    async def filter_events_for_user(
        self,
        user_id: str,
        events: list[PersistedEvent],
        *,
        memberships: Sequence[UserMembership] | None = None,
    ) -> list[PersistedEvent]:
        """The events the user may see, in the order given.

        `memberships`: every membership event of the user, oldest first, when the caller
        has them already (/sync's cache); otherwise they are read."""
        if not events:
            return []
        room_ids = list(dict.fromkeys(pe.event.room_id for pe in events))
        # One query each for every room: the user's memberships, and (only for rooms with
        # events the state store cannot answer for) the history-visibility changes.
        if memberships is None:
            by_room = await self.sync_store.get_user_memberships_in_rooms(user_id, room_ids)
        else:
            by_room = {}
            for m in memberships:
                by_room.setdefault(m.room_id, []).append(m)
        rows = {
            room_id: [
                MembershipRow(m.stream_ordering, m.membership, m.event_id)
                for m in by_room.get(room_id, ())
            ]
            for room_id in room_ids
        }
        joined = {room_id: RoomTimeline.build((), rows[room_id]) for room_id in room_ids}
        from_state = await self._facts_from_state_store(user_id, events, joined)
        uncovered = {pe.event.room_id for pe in events if pe.event.event_id not in from_state}
        changes = await self.sync_store.get_history_visibility_changes_many(uncovered)
        timelines = {
            room_id: RoomTimeline.build(changes[room_id], rows[room_id])
            if room_id in uncovered
            else joined[room_id]
            for room_id in room_ids
        }
        return [
            pe
            for pe in events
            if event_allowed(
                pe,
                user_id,
                from_state.get(pe.event.event_id) or timelines[pe.event.room_id].facts(pe),
            )
        ]

    async def _facts_from_state_store(
        self, user_id: str, events: list[PersistedEvent], timelines: Mapping[str, RoomTimeline]
    ) -> dict[str, EventFacts]:
        """Facts for the events the state store knows; the rest fall back to the stream.
        (Only the memberships of `timelines` are read here.)"""
        if self.state_store is None:
            return {}
        types = [(HISTORY_VISIBILITY, ""), (MEMBER, user_id)]
        after = await self.state_store.get_state_ids_after_many(
            [pe.event.event_id for pe in events], types
        )
        before: dict[str, dict[StateKey, str]] = {}
        for pe in events:
            if pe.event.event_id in after and _needs_state_before(pe, user_id):
                try:
                    before[pe.event.event_id] = await self.state_store.get_state_ids_before(
                        pe.event.event_id, types
                    )
                except StateNotFoundError:
                    after.pop(pe.event.event_id, None)
        referenced = {
            eid for state in (*after.values(), *before.values()) for eid in state.values()
        }
        loaded = await self.store.get_events(list(referenced))

        def read(state: Mapping[StateKey, str]) -> tuple[str, str | None]:
            hv = loaded.get(state.get((HISTORY_VISIBILITY, ""), ""))
            member = loaded.get(state.get((MEMBER, user_id), ""))
            value = hv.event.content.get("history_visibility") if hv is not None else None
            return (
                normalise_visibility(value if isinstance(value, str) else None),
                member.event.membership if member is not None else None,
            )

        out: dict[str, EventFacts] = {}
        for pe in events:
            event_id = pe.event.event_id
            if event_id not in after:
                continue
            visibility, membership = read(after[event_id])
            visibility_before, membership_before = read(before.get(event_id, after[event_id]))
            out[event_id] = EventFacts(
                visibility,
                membership,
                visibility_before,
                membership_before,
                timelines[pe.event.room_id].joined_after(pe.stream_ordering),
            )
        return out

    async def can_see_event(self, user_id: str, pe: PersistedEvent) -> bool:
        return bool(await self.filter_events_for_user(user_id, [pe]))

    async def current_visibility(self, room_id: str) -> str:
        event = await self.store.get_current_state_event(room_id, HISTORY_VISIBILITY, "")
        value = event.event.content.get("history_visibility") if event is not None else None
        return normalise_visibility(value if isinstance(value, str) else None)

    async def check_user_can_see_room_state(self, user_id: str, room_id: str) -> RoomStateAccess:
        """Raises 403 M_FORBIDDEN unless the user may read the room's state.

        Joined users, and anyone while the room is world_readable, read the current
        state; a former member reads the state as of their departure.
        """
        memberships = await self.extras.get_user_memberships(user_id, room_id)
        current = memberships[-1].membership if memberships else None
        if current == "join":
            return RoomStateAccess(room_id, current, None)
        if await self.current_visibility(room_id) == WORLD_READABLE:
            return RoomStateAccess(room_id, current, None, world_readable=True)
        departure = _departure(memberships)
        if departure is not None:
            return RoomStateAccess(room_id, current, departure.stream_ordering, departure.event_id)
        raise forbidden("You are not a member of this room and were never one")


def _departure(memberships: Iterable[MembershipRow]) -> MembershipRow | None:
    """The event with which a former member stopped being joined, if they ever were."""
    rows = list(memberships)
    last_join = max((i for i, m in enumerate(rows) if m.membership == "join"), default=None)
    if last_join is None or last_join + 1 >= len(rows):
        return None
    return rows[last_join + 1]
