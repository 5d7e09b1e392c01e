"""SyncHandler: computes /sync responses, and long-polls on the notifier.

One computation works at fixed positions: the events stream at this process's tracker
position `pos` (read once), and every other stream at the position fixed for its sources.
`next_batch` carries exactly those positions, so the next sync starts where this one ended.

Rooms (per room, a window (lo, hi] of the events stream):
* joined, and joined at `since` without a leave in between: (since, pos], the timeline the
  newest events of the window and `state` the state at the timeline's start minus the
  state the client had at `since` (empty when the timeline holds every event of the window);
* newly joined (or an initial sync, or a rejoin): everything up to `pos`, full state;
* left or banned within the window (or every left room with include_leave on an initial
  sync): up to the position of the leave;
* invited / knocked: stripped state, when the invite or knock is in the window.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet import defer

from homeserver.events.client_format import is_stripped_type, serialize_event, stripped_state
from homeserver.events.event import StateKey
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.sync.filters import RoomEventFilter, SyncFilter, only_fields
from homeserver.sync.lazy_members import KnownMembers, LazyMemberCache
from homeserver.sync.membership import MembershipHistory
from homeserver.sync.merge import (
    MergedContributions,
    filter_contributions,
    global_sections_json,
    merge_contributions,
)
from homeserver.sync.sources import (
    EMPTY_CONTRIBUTION,
    SyncContribution,
    SyncSource,
    SyncSourceRequest,
    registered_sources,
)
from homeserver.sync.state_access import RoomStateReader
from homeserver.sync.tokens import STREAM_ORDER, StreamToken
from replication.streams import StreamPositionTracker
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.sync import SyncStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
HEROES = 5


@attrs.frozen(slots=True)
class SyncLimits:
    # Timeline events per room when the filter sets no limit, and the most it may ask for.
    default_timeline_limit: int = 10
    max_timeline_limit: int = 1000
    # How long a follower waits to reach a `since` its writer has announced.
    catch_up_timeout_s: float = 10.0
    # How long a follower waits for a `since` beyond anything its writer has announced
    # (the announcement may be in flight) before calling the token invalid.
    unknown_position_wait_s: float = 2.0
    # Events examined per room to fill a filtered timeline before answering `limited`.
    max_timeline_scan: int = 2000


@attrs.frozen(slots=True)
class SyncRequest:
    user_id: str
    device_id: str
    since: StreamToken | None
    timeout_ms: int
    full_state: bool
    filter: SyncFilter = attrs.field(factory=SyncFilter)
    # "online" when the client did not say (the spec's default).
    set_presence: str = "online"
    use_state_after: bool = False


@attrs.frozen(slots=True)
class TimelineSlice:
    events: list[PersistedEvent]  # oldest first
    limited: bool
    # Position /messages paginates backwards from to reach what precedes the slice.
    prev_pos: int
    # The slice holds every event of its window (nothing filtered, hidden or cut off).
    complete: bool


@attrs.define
class _Computation:
    """The fixed inputs and the per-request memo of one /sync computation."""

    req: SyncRequest
    pos: int
    history: MembershipHistory
    states: RoomStateReader
    known_members: KnownMembers
    timeline_limit: int
    now_ms: int
    # room_id -> member user_id -> event_id, sent in this response (lazy-loading).
    sent_members: dict[str, dict[str, str]] = attrs.field(factory=dict)
    fresh_room_ids: set[str] = attrs.field(factory=set)


class SyncHandler:
    def __init__(
        self,
        *,
        event_store: EventStore,
        sync_store: SyncStore,
        notifier: Notifier,
        trackers: Mapping[str, StreamPositionTracker],
        writes_stream: Callable[[str], bool],
        clock_ms: Callable[[], int],
        extras: dict[str, Any],
        limits: SyncLimits = SyncLimits(),
        lazy_members: LazyMemberCache | None = None,
    ) -> None:
        self.store = event_store
        self.sync_store = sync_store
        self.notifier = notifier
        self.trackers = trackers
        self.writes_stream = writes_stream
        self.clock_ms = clock_ms
        # Read at request time: modules installed after this one register into it.
        self.extras = extras
        self.limits = limits
        self.lazy_members = lazy_members if lazy_members is not None else LazyMemberCache()

    # ------------------------------------------------------------------ entry point

    async def sync(self, req: SyncRequest) -> JsonDict:
        sources = registered_sources(self.extras)
        if req.since is not None:
            await self.check_since(req.since, sources)
        await self._run_activity_hooks(req, sources)

        deadline_ms = self.clock_ms() + req.timeout_ms
        while True:
            listener = None
            if req.since is not None and not req.full_state and req.timeout_ms > 0:
                # Listen before computing, so nothing that lands meanwhile is missed.
                rooms = await self.store.get_rooms_for_user(req.user_id)
                listener = self.notifier.listen(
                    req.user_id, [r for r, m in rooms.items() if m == "join"]
                )
            try:
                response, has_data = await self._compute(req, sources)
                remaining_ms = deadline_ms - self.clock_ms()
                if has_data or listener is None or remaining_ms <= 0:
                    return response
                woken = await listener.wait(remaining_ms / 1000.0)
            finally:
                if listener is not None:
                    listener.close()
            if not woken:
                return response

    # ---------------------------------------------------------------- since checks

    async def check_since(self, since: StreamToken, sources: Sequence[SyncSource]) -> None:
        """400 M_INVALID_PARAM for a token beyond what any stream has reached. A follower
        first waits (briefly) for its view to catch up; a writer knows at once."""
        for stream in STREAM_ORDER:
            want = since.get(stream)
            if want == 0:
                continue
            tracker = self.trackers.get(stream)
            if tracker is not None:
                if want <= tracker.position:
                    continue
                if self.writes_stream(stream):
                    raise _future_token(stream)
                announced = want <= tracker.writer_position
                wait_s = (
                    self.limits.catch_up_timeout_s
                    if announced
                    else self.limits.unknown_position_wait_s
                )
                if not await tracker.wait_for(want, wait_s):
                    raise _future_token(stream)
                continue
            own = [s for s in sources if s.stream == stream]
            if not own:
                raise _future_token(stream)
            newest = max([await s.current_position() for s in own])
            if want > newest:
                raise _future_token(stream)

    async def _run_activity_hooks(self, req: SyncRequest, sources: Sequence[SyncSource]) -> None:
        for source in sources:
            hook = getattr(source, "on_sync_request", None)
            if hook is None:
                continue
            try:
                await hook(req.user_id, req.device_id, req.set_presence)
            except MatrixError:
                raise
            except Exception:
                logger.exception("sync activity hook failed", extra={"stream": source.stream})

    # -------------------------------------------------------------------- compute

    async def _compute(
        self, req: SyncRequest, sources: Sequence[SyncSource]
    ) -> tuple[JsonDict, bool]:
        pos = self.trackers["events"].position
        since_events = req.since.events if req.since is not None else None
        history = MembershipHistory(await self.sync_store.get_membership_history(req.user_id, pos))
        joined_now = frozenset(r for r in history.room_ids() if history.at(r, pos) == "join")
        if since_events is None:
            newly_joined = joined_now
        else:
            newly_joined = frozenset(
                r for r in joined_now if history.newly_joined(r, since_events, pos)
            )

        positions = {"events": pos}
        source_requests: list[tuple[SyncSource, SyncSourceRequest]] = []
        for source in sources:
            up_to = await self._source_position(source)
            source_requests.append(
                (
                    source,
                    SyncSourceRequest(
                        user_id=req.user_id,
                        device_id=req.device_id,
                        since=req.since.get(source.stream) if req.since is not None else None,
                        up_to=up_to,
                        joined_room_ids=joined_now,
                        newly_joined_room_ids=newly_joined,
                        filter=req.filter,
                        full_state=req.full_state,
                    ),
                )
            )
        # The sources run while the rooms are computed.
        contributions_d = defer.gatherResults(
            [defer.ensureDeferred(self._call_source(s, r)) for s, r in source_requests],
            consumeErrors=True,
        )

        limit = req.filter.room.timeline.limit
        timeline_limit = self.limits.default_timeline_limit if limit is None else limit
        token_str = req.since.encode() if req.since is not None else None
        lazy = req.filter.lazy_load_members and not req.filter.include_redundant_members
        comp = _Computation(
            req=req,
            pos=pos,
            history=history,
            states=RoomStateReader(self.sync_store, self.extras.get("state_store")),
            known_members=self.lazy_members.known(req.user_id, req.device_id, token_str)
            if lazy
            else {},
            timeline_limit=min(timeline_limit, self.limits.max_timeline_limit),
            now_ms=self.clock_ms(),
        )
        rooms_json, rooms_have_data = await self._rooms(comp, since_events)

        results: list[tuple[SyncContribution, bool]] = await contributions_d
        merged = merge_contributions([c for c, _ in results])
        merged = filter_contributions(merged, req.filter, joined_now)
        since_positions = req.since.positions() if req.since is not None else {}
        for (source, source_req), (_, ok) in zip(source_requests, results, strict=True):
            if source.stream not in STREAM_ORDER:
                logger.warning(
                    "sync source names an unknown stream", extra={"stream": source.stream}
                )
                continue
            reached = source_req.up_to if ok else since_positions.get(source.stream, 0)
            positions[source.stream] = max(positions.get(source.stream, 0), reached)
        for stream, value in since_positions.items():
            positions[stream] = max(positions.get(stream, 0), value)
        next_batch = StreamToken(**positions).encode()

        self._add_source_room_data(rooms_json, merged, comp, since_events)
        response: JsonDict = {"next_batch": next_batch, "rooms": rooms_json}
        response.update(global_sections_json(merged.global_sections))
        has_data = rooms_have_data or merged.has_data or bool(rooms_json["join"])

        if lazy:
            self.lazy_members.remember(
                req.user_id,
                req.device_id,
                next_batch,
                comp.known_members,
                comp.sent_members,
                reset_room_ids=comp.fresh_room_ids | set(rooms_json["leave"]),
            )
        return response, has_data

    async def _source_position(self, source: SyncSource) -> int:
        tracker = self.trackers.get(source.stream)
        if tracker is not None:
            return tracker.position
        return int(await source.current_position())

    async def _call_source(
        self, source: SyncSource, req: SyncSourceRequest
    ) -> tuple[SyncContribution, bool]:
        try:
            return await source.for_sync(req), True
        except MatrixError:
            raise
        except Exception:
            logger.exception("sync source failed", extra={"stream": source.stream})
            return EMPTY_CONTRIBUTION, False

    def _add_source_room_data(
        self,
        rooms_json: JsonDict,
        merged: MergedContributions,
        comp: _Computation,
        since: int | None,
    ) -> None:
        join = rooms_json["join"]
        for room_id, sections in merged.rooms.items():
            room = join.get(room_id)
            if room is None:
                # Nothing happened in the room's timeline, but its ephemeral or account
                # data changed: the room appears with an empty timeline.
                room = self._empty_joined_room(comp, room_id)
                join[room_id] = room
            for name, events in sections.items():
                room[name]["events"].extend(events)

    def _empty_joined_room(self, comp: _Computation, room_id: str) -> JsonDict:
        state_key = "state_after" if comp.req.use_state_after else "state"
        room: JsonDict = {
            "timeline": {
                "events": [],
                "limited": False,
                "prev_batch": StreamToken(events=comp.pos).encode(),
            },
            state_key: {"events": []},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {"highlight_count": 0, "notification_count": 0},
        }
        if comp.req.filter.room.timeline.unread_thread_notifications:
            room["unread_thread_notifications"] = {}
        return room

    # ---------------------------------------------------------------------- rooms

    async def _rooms(self, comp: _Computation, since: int | None) -> tuple[JsonDict, bool]:
        req, history, pos = comp.req, comp.history, comp.pos
        room_filter = req.filter.room
        join: JsonDict = {}
        invite: JsonDict = {}
        knock: JsonDict = {}
        leave: JsonDict = {}
        has_data = False
        room_ids = [r for r in history.room_ids() if room_filter.allows_room(r)]

        changed: set[str] = set()
        if since is not None:
            joined_since = [r for r in room_ids if history.at(r, pos) == "join"]
            changed = await self.store.get_rooms_changed(joined_since, since, pos)

        for room_id in room_ids:
            membership = history.at(room_id, pos)
            if membership == "join":
                if since is None or history.newly_joined(room_id, since, pos):
                    comp.fresh_room_ids.add(room_id)
                    join[room_id], _ = await self._room(comp, room_id, None, pos, joined=True)
                    has_data = True
                elif req.full_state or room_id in changed:
                    room, room_has_data = await self._room(comp, room_id, since, pos, joined=True)
                    if room_has_data or req.full_state:
                        join[room_id] = room
                        has_data = has_data or room_has_data
            elif membership in ("invite", "knock"):
                last = history.last_change_at(room_id, pos)
                if since is None or (last is not None and last.stream_ordering > since):
                    stripped = await self._stripped_state(room_id, req.user_id, pos)
                    if membership == "invite":
                        invite[room_id] = {"invite_state": {"events": stripped}}
                    else:
                        knock[room_id] = {"knock_state": {"events": stripped}}
                    has_data = True
            elif membership in ("leave", "ban"):
                left = history.last_change_at(room_id, pos)
                assert left is not None
                if since is None:
                    if not room_filter.include_leave:
                        continue
                    lo: int | None = None
                elif left.stream_ordering <= since:
                    continue
                elif history.at(room_id, since) == "join" and not history.rejoined_between(
                    room_id, since, left.stream_ordering
                ):
                    lo = since
                else:
                    lo = None
                never_joined = not history.ever_joined(room_id, left.stream_ordering)
                leave[room_id], _ = await self._room(
                    comp, room_id, lo, left.stream_ordering, joined=False, never_joined=never_joined
                )
                has_data = True
        return {"join": join, "invite": invite, "knock": knock, "leave": leave}, has_data

    async def _room(
        self,
        comp: _Computation,
        room_id: str,
        lo: int | None,
        hi: int,
        *,
        joined: bool,
        never_joined: bool = False,
    ) -> tuple[JsonDict, bool]:
        """A joined or left room over the window (lo, hi]; lo None: from the beginning."""
        req = comp.req
        fresh = lo is None
        whole_state = fresh or req.full_state
        timeline = await self.load_timeline(
            req.user_id,
            room_id,
            lo,
            hi,
            comp.timeline_limit,
            req.filter.room.timeline,
            only_own_membership=never_joined,
        )
        start_pos = timeline.events[0].stream_ordering - 1 if timeline.events else hi
        state_pos = hi if req.use_state_after else start_pos

        # The state the client should apply: all of it, or what changed since `lo`.
        state_ids: dict[StateKey, str]
        if never_joined:
            # Never a member: nothing of the room's state but what the timeline shows.
            state_ids = {}
        elif whole_state:
            state_ids = await comp.states.state_at(room_id, state_pos)
        elif timeline.complete and not req.use_state_after:
            state_ids = {}
        else:
            assert lo is not None
            now_state = await comp.states.state_at(room_id, state_pos)
            had = await comp.states.state_at(room_id, lo)
            state_ids = {k: v for k, v in now_state.items() if had.get(k) != v}

        summary: JsonDict | None = None
        heroes: list[str] = []
        if joined and (whole_state or await self._members_changed(room_id, lo, hi, timeline)):
            summary, heroes = await self._summary(comp, room_id, hi)

        if req.filter.lazy_load_members and not never_joined:
            state_ids = await self._lazy_members(
                comp, room_id, state_ids, state_pos, timeline, heroes, whole_state
            )

        state_events = await self._load_state_events(state_ids, req.filter.room.state, room_id)
        serialized_timeline = await self._serialize(comp, timeline.events, bundle=timeline.limited)
        serialized_state = await self._serialize(comp, state_events, bundle=False)

        room: JsonDict = {
            "timeline": {
                "events": serialized_timeline,
                "limited": timeline.limited,
                "prev_batch": StreamToken(events=timeline.prev_pos).encode(),
            },
            ("state_after" if req.use_state_after else "state"): {"events": serialized_state},
            "account_data": {"events": []},
        }
        if joined:
            room["ephemeral"] = {"events": []}
            room["unread_notifications"] = {"highlight_count": 0, "notification_count": 0}
            if req.filter.room.timeline.unread_thread_notifications:
                room["unread_thread_notifications"] = {}
            if summary is not None:
                room["summary"] = summary
        return room, bool(serialized_timeline or serialized_state)

    async def _members_changed(
        self, room_id: str, lo: int | None, hi: int, timeline: TimelineSlice
    ) -> bool:
        if lo is None:
            return True
        if timeline.complete:
            return any(pe.event.type == MEMBER for pe in timeline.events)
        return await self.sync_store.has_member_events_between(room_id, lo, hi)

    async def _summary(
        self, comp: _Computation, room_id: str, hi: int
    ) -> tuple[JsonDict, list[str]]:
        members = await comp.states.state_at(room_id, hi, [(MEMBER, None)])
        entries = await self.sync_store.get_state_entries(list(members.values()))
        present: list[tuple[int, str]] = []
        gone: list[tuple[int, str]] = []
        joined_count = invited_count = 0
        for (_, user_id), event_id in members.items():
            entry = entries.get(event_id)
            if entry is None:
                continue
            if entry.membership == "join":
                joined_count += 1
            elif entry.membership == "invite":
                invited_count += 1
            if user_id == comp.req.user_id:
                continue
            if entry.membership in ("join", "invite"):
                present.append((entry.stream_ordering, user_id))
            elif entry.membership in ("leave", "ban"):
                gone.append((entry.stream_ordering, user_id))
        chosen = sorted(present) or sorted(gone)
        heroes = [user_id for _, user_id in chosen[:HEROES]]
        summary = {
            "m.heroes": heroes,
            "m.joined_member_count": joined_count,
            "m.invited_member_count": invited_count,
        }
        return summary, heroes

    async def _lazy_members(
        self,
        comp: _Computation,
        room_id: str,
        state_ids: dict[StateKey, str],
        state_pos: int,
        timeline: TimelineSlice,
        heroes: list[str],
        whole_state: bool,
    ) -> dict[StateKey, str]:
        """Lazy-loading: membership only for the timeline's senders (and heroes, and the
        user on a fresh room), unless the client already has that exact member event.
        Member changes in an incremental sync's gap are always kept (the spec's rule)."""
        req = comp.req
        wanted = {pe.event.sender for pe in timeline.events} | set(heroes)
        if whole_state:
            wanted.add(req.user_id)
            kept = {k: v for k, v in state_ids.items() if k[0] != MEMBER or k[1] in wanted}
        else:
            kept = dict(state_ids)
        # Members the timeline shows before their member event appears in it.
        missing = [(MEMBER, u) for u in wanted if (MEMBER, u) not in kept]
        if missing:
            found = await comp.states.state_at(room_id, state_pos, missing)
            kept.update(found)
        known = {} if whole_state else comp.known_members.get(room_id, {})
        redundant_ok = req.filter.include_redundant_members
        out: dict[StateKey, str] = {}
        for key, event_id in kept.items():
            if (
                key[0] == MEMBER
                and not redundant_ok
                and key not in state_ids  # gap changes always go out
                and known.get(key[1]) == event_id
            ):
                continue
            out[key] = event_id
        sent = comp.sent_members.setdefault(room_id, {})
        for key, event_id in out.items():
            if key[0] == MEMBER:
                sent[key[1]] = event_id
        for pe in timeline.events:
            if pe.event.type == MEMBER and pe.event.state_key is not None:
                sent[pe.event.state_key] = pe.event.event_id
        return out

    async def _load_state_events(
        self, state_ids: Mapping[StateKey, str], state_filter: RoomEventFilter, room_id: str
    ) -> list[PersistedEvent]:
        if not state_ids or state_filter.allows_nothing():
            return []
        events = await self.store.get_events(list(state_ids.values()))
        chosen = [
            pe
            for pe in events.values()
            if state_filter.allows_event(pe.event.type, pe.event.sender, room_id, pe.event.content)
        ]
        chosen.sort(key=lambda pe: pe.stream_ordering)
        return chosen

    async def _stripped_state(self, room_id: str, user_id: str, pos: int) -> list[JsonDict]:
        state = await RoomStateReader(self.sync_store, self.extras.get("state_store")).state_at(
            room_id, pos
        )
        wanted = [
            eid
            for key, eid in state.items()
            if is_stripped_type(key[0]) or key == (MEMBER, user_id)
        ]
        events = await self.store.get_events(wanted)
        ordered = sorted(events.values(), key=lambda pe: pe.stream_ordering)
        return stripped_state(ordered)

    # ------------------------------------------------------------------- timeline

    async def load_timeline(
        self,
        user_id: str,
        room_id: str,
        lo: int | None,
        hi: int,
        limit: int,
        timeline_filter: RoomEventFilter,
        *,
        only_own_membership: bool = False,
    ) -> TimelineSlice:
        """The newest `limit` events of (lo, hi] the filter and history visibility let
        through, scanning at most `max_timeline_scan` events."""
        floor = lo or 0
        collected: list[PersistedEvent] = []  # newest first
        cursor = hi
        complete = True
        exhausted = False
        scanned = 0
        batch_size = limit + 1
        while len(collected) <= limit:
            batch = await self.store.get_room_events_backwards(room_id, cursor, floor, batch_size)
            if batch:
                cursor = batch[-1].stream_ordering - 1
            scanned += len(batch)
            kept = [
                pe
                for pe in batch
                if timeline_filter.allows_event(
                    pe.event.type, pe.event.sender, room_id, pe.event.content
                )
                and (
                    not only_own_membership
                    or (pe.event.type == MEMBER and pe.event.state_key == user_id)
                )
            ]
            if not only_own_membership:
                # (A user's own membership events in a room they never joined are theirs
                # to see whatever the room's history visibility.)
                kept = await self._visible(user_id, kept)
            if len(kept) != len(batch):
                complete = False
            collected.extend(kept)
            if len(batch) < batch_size:
                exhausted = True
                break
            if scanned >= self.limits.max_timeline_scan:
                break
            batch_size = min(max(limit + 1, 50), 1000)
        limited = not exhausted or len(collected) > limit
        events = list(reversed(collected[:limit])) if limit > 0 else []
        if events:
            prev_pos = events[0].stream_ordering - 1
        elif limited:
            prev_pos = cursor
        else:
            prev_pos = hi
        return TimelineSlice(events, limited, prev_pos, complete and not limited)

    async def _visible(self, user_id: str, events: list[PersistedEvent]) -> list[PersistedEvent]:
        visibility = self.extras.get("visibility")
        if visibility is None or not events:
            return events
        result = visibility.filter_events_for_user(user_id, events)
        if inspect.isawaitable(result):
            result = await result
        return list(result)

    # ---------------------------------------------------------------- serialising

    async def _serialize(
        self, comp: _Computation, events: list[PersistedEvent], *, bundle: bool
    ) -> list[JsonDict]:
        if not events:
            return []
        req = comp.req
        if req.filter.event_format == "federation":
            out = [dict(pe.event.pdu) for pe in events]
        else:
            serializer = self.extras.get("serializer")
            if serializer is not None:
                out = await serializer.serialize_many(
                    events, req.user_id, req.device_id, bundle_aggregations=bundle
                )
            else:
                device = (req.user_id, req.device_id)
                out = [serialize_event(pe, comp.now_ms, for_device=device) for pe in events]
        if req.filter.event_fields is not None:
            out = [only_fields(e, req.filter.event_fields) for e in out]
        return out


def _future_token(stream: str) -> MatrixError:
    return MatrixError(
        400, "M_INVALID_PARAM", f"since token is invalid: its {stream} position is from the future"
    )
