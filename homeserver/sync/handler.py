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
from homeserver.sync.membership_cache import DEFAULT_MAX_USERS, UserMembershipCache
from homeserver.sync.merge import (
    MergedContributions,
    filter_contributions,
    global_sections_json,
    merge_contributions,
)
from homeserver.sync.room_changes import DEFAULT_MAX_ROOMS, RoomChangeCache
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
from storage.stores.sync import StateEntry, SyncStore, UserMembership

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
ROOM_NAME = "m.room.name"
CANONICAL_ALIAS = "m.room.canonical_alias"
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
    # Users whose membership history is cached (see membership_cache.py).
    membership_cache_users: int = DEFAULT_MAX_USERS
    # Rooms whose newest position is remembered (see room_changes.py).
    room_change_cache_rooms: int = DEFAULT_MAX_ROOMS


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


@attrs.frozen(slots=True)
class TimelineQuery:
    """One room's window (lo, hi] of the events stream (lo None: from the beginning)."""

    room_id: str
    lo: int | None
    hi: int
    # A room the user never joined: only their own membership events.
    only_own_membership: bool = False


@attrs.define
class _TimelineScan:
    """The progress of one room's timeline scan, newest events first."""

    query: TimelineQuery
    cursor: int
    batch_size: int
    collected: list[PersistedEvent] = attrs.field(factory=list)
    scanned: int = 0
    complete: bool = True
    exhausted: bool = False
    done: bool = False


@attrs.frozen(slots=True)
class _RoomJob:
    """A joined or left room to build over the window (lo, hi]."""

    room_id: str
    lo: int | None
    hi: int
    joined: bool
    never_joined: bool = False


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
    # Every membership event of the user (from the cache; may reach beyond pos).
    memberships: Sequence[UserMembership] = ()
    # Loaded for this computation (events and state entries do not change).
    events: dict[str, PersistedEvent] = attrs.field(factory=dict)
    entries: dict[str, StateEntry] = attrs.field(factory=dict)


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
        events_tracker = trackers["events"]
        self.memberships = UserMembershipCache(
            sync_store.get_user_memberships,
            lambda: events_tracker.position,
            max_users=limits.membership_cache_users,
        )
        notifier.add_row_observer(self.memberships.on_rows)
        self.room_changes = RoomChangeCache(limits.room_change_cache_rooms)
        notifier.add_row_observer(self.room_changes.on_rows)

    # ------------------------------------------------------------------ entry point

    async def sync(self, req: SyncRequest) -> JsonDict:
        sources = registered_sources(self.extras)
        if req.since is not None:
            await self.check_since(req.since, sources)
        await self._run_activity_hooks(req, sources)
        try:
            return await self._sync_until_data(req, sources)
        finally:
            self._run_finished_hooks(req, sources)

    async def _sync_until_data(self, req: SyncRequest, sources: Sequence[SyncSource]) -> JsonDict:
        deadline_ms = self.clock_ms() + req.timeout_ms
        while True:
            listener = None
            if req.since is not None and not req.full_state and req.timeout_ms > 0:
                # Listen before computing, so nothing that lands meanwhile is missed.
                memberships = await self.memberships.get(
                    req.user_id, self.trackers["events"].position
                )
                latest = {m.room_id: m.membership for m in memberships}
                listener = self.notifier.listen(
                    req.user_id, [r for r, m in latest.items() if m == "join"]
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
            except (MatrixError, defer.CancelledError):
                # Cancelled: the client hung up, which is normal operation, not a failure.
                raise
            except Exception:
                logger.exception("sync activity hook failed", extra={"stream": source.stream})

    def _run_finished_hooks(self, req: SyncRequest, sources: Sequence[SyncSource]) -> None:
        # Optional `on_sync_finished(user_id, device_id, set_presence)`, not awaited (it
        # also runs when the request is cancelled), e.g. presence: the user stopped syncing.
        for source in sources:
            hook = getattr(source, "on_sync_finished", None)
            if hook is None:
                continue
            try:
                hook(req.user_id, req.device_id, req.set_presence)
            except Exception:
                logger.exception("sync finished hook failed", extra={"stream": source.stream})

    # -------------------------------------------------------------------- compute

    async def _compute(
        self, req: SyncRequest, sources: Sequence[SyncSource]
    ) -> tuple[JsonDict, bool]:
        pos = self.trackers["events"].position
        since_events = req.since.events if req.since is not None else None
        memberships = await self.memberships.get(req.user_id, pos)
        history = MembershipHistory(
            (m.room_id, m.membership, m.stream_ordering)
            for m in memberships
            if m.stream_ordering <= pos
        )
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
                        events_since=since_events,
                        events_up_to=pos,
                    ),
                )
            )
        # The sources run while the rooms are computed.
        contributions_d = defer.gatherResults(
            [
                defer.succeed((EMPTY_CONTRIBUTION, True))
                if _unmoved(s, r)
                else defer.ensureDeferred(self._call_source(s, r))
                for s, r in source_requests
            ],
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
            memberships=memberships,
        )
        rooms_json, rooms_have_data = await self._rooms(comp, since_events)

        try:
            results: list[tuple[SyncContribution, bool]] = await contributions_d
        except defer.FirstError as e:
            # What a source raised (a Matrix error, or cancellation when the client hung
            # up), not the gather's wrapper, which the HTTP layer would answer with a 500.
            e.subFailure.raiseException()
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
        except (MatrixError, defer.CancelledError):
            # Cancelled: the client hung up, which is normal operation, not a failure.
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
            changed, unknown = self.room_changes.changed(joined_since, since, pos)
            if unknown:
                changed |= await self.store.get_rooms_changed(unknown, since, pos)

        # Joined and left rooms are built together (see _build_rooms); each job's section:
        # "fresh" and "left" always appear, "incremental" only with something to show.
        jobs: list[tuple[str, _RoomJob]] = []
        for room_id in room_ids:
            membership = history.at(room_id, pos)
            if membership == "join":
                if since is None or history.newly_joined(room_id, since, pos):
                    comp.fresh_room_ids.add(room_id)
                    jobs.append(("fresh", _RoomJob(room_id, None, pos, joined=True)))
                elif req.full_state or room_id in changed:
                    jobs.append(("incremental", _RoomJob(room_id, since, pos, joined=True)))
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
                job = _RoomJob(
                    room_id, lo, left.stream_ordering, joined=False, never_joined=never_joined
                )
                jobs.append(("left", job))

        built = await self._build_rooms(comp, [job for _, job in jobs])
        for (kind, job), (room, room_has_data) in zip(jobs, built, strict=True):
            if kind == "fresh":
                join[job.room_id] = room
                has_data = True
            elif kind == "incremental":
                if room_has_data or req.full_state:
                    join[job.room_id] = room
                    has_data = has_data or room_has_data
            else:
                leave[job.room_id] = room
                has_data = True
        return {"join": join, "invite": invite, "knock": knock, "leave": leave}, has_data

    async def _build_rooms(
        self, comp: _Computation, jobs: Sequence[_RoomJob]
    ) -> list[tuple[JsonDict, bool]]:
        """Joined and left rooms over their windows (lo, hi]; lo None: from the beginning.

        The rooms are built together, a phase at a time, so that each phase asks the
        database once for every room (timelines, state, members, events, serialising)
        rather than once per room; per room, the rules are those of `_room_state`."""
        if not jobs:
            return []
        req = comp.req
        timelines = await self.load_timelines(
            req.user_id,
            [TimelineQuery(j.room_id, j.lo, j.hi, j.never_joined) for j in jobs],
            comp.timeline_limit,
            req.filter.room.timeline,
            memberships=comp.memberships,
        )

        # The states the rooms will read, fetched together.
        wanted: list[tuple[str, int]] = []
        summary_at: list[tuple[str, int]] = []
        for job, timeline in zip(jobs, timelines, strict=True):
            if job.never_joined:
                continue
            whole_state = job.lo is None or req.full_state
            state_pos = job.hi if req.use_state_after else _start_pos(timeline, job.hi)
            if whole_state:
                wanted.append((job.room_id, state_pos))
                if job.joined:
                    summary_at.append((job.room_id, job.hi))
            elif not timeline.complete or req.use_state_after:
                assert job.lo is not None
                wanted += [(job.room_id, state_pos), (job.room_id, job.lo)]
        await comp.states.prefetch(wanted + summary_at)
        await self._prefetch_summaries(comp, summary_at)

        state_ids_per_room: list[dict[StateKey, str]] = []
        summaries: list[JsonDict | None] = []
        for job, timeline in zip(jobs, timelines, strict=True):
            state_ids, summary = await self._room_state(comp, job, timeline)
            state_ids_per_room.append(state_ids)
            summaries.append(summary)

        state_filter = req.filter.room.state
        if not state_filter.allows_nothing():
            await self._load_events(
                comp, [eid for state_ids in state_ids_per_room for eid in state_ids.values()]
            )
        state_events = [
            self._state_events(comp, state_ids, state_filter, job.room_id)
            for job, state_ids in zip(jobs, state_ids_per_room, strict=True)
        ]

        # Serialised in two batches: limited timelines carry bundled aggregations.
        bundled = [pe for t in timelines if t.limited for pe in t.events]
        plain = [pe for t in timelines if not t.limited for pe in t.events]
        plain += [pe for events in state_events for pe in events]
        bundled_json = iter(await self._serialize(comp, bundled, bundle=True))
        plain_json = iter(await self._serialize(comp, plain, bundle=False))
        timelines_json = [
            [next(bundled_json if t.limited else plain_json) for _ in t.events] for t in timelines
        ]
        states_json = [[next(plain_json) for _ in events] for events in state_events]

        out: list[tuple[JsonDict, bool]] = []
        for job, timeline, summary, serialized_timeline, serialized_state in zip(
            jobs, timelines, summaries, timelines_json, states_json, strict=True
        ):
            room: JsonDict = {
                "timeline": {
                    "events": serialized_timeline,
                    "limited": timeline.limited,
                    "prev_batch": StreamToken(events=timeline.prev_pos).encode(),
                },
                ("state_after" if req.use_state_after else "state"): {"events": serialized_state},
                "account_data": {"events": []},
            }
            if job.joined:
                room["ephemeral"] = {"events": []}
                room["unread_notifications"] = {"highlight_count": 0, "notification_count": 0}
                if req.filter.room.timeline.unread_thread_notifications:
                    room["unread_thread_notifications"] = {}
                if summary is not None:
                    room["summary"] = summary
            out.append((room, bool(serialized_timeline or serialized_state)))
        return out

    async def _room_state(
        self, comp: _Computation, job: _RoomJob, timeline: TimelineSlice
    ) -> tuple[dict[StateKey, str], JsonDict | None]:
        """The state a room's section carries, and its summary (joined rooms, when the
        membership may have changed)."""
        req = comp.req
        room_id, lo, hi = job.room_id, job.lo, job.hi
        whole_state = lo is None or req.full_state
        state_pos = hi if req.use_state_after else _start_pos(timeline, hi)

        # The state the client should apply: all of it, or what changed since `lo`.
        state_ids: dict[StateKey, str]
        if job.never_joined:
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

        lazy = req.filter.lazy_load_members and not job.never_joined
        summary: JsonDict | None = None
        heroes: list[str] = []
        if job.joined and (
            whole_state
            or await self._members_changed(room_id, lo, hi, timeline)
            # Lazy loading leaves the heroes out of named rooms (see _summary): a name
            # coming or going changes whether they are needed.
            or (lazy and _naming_changed(state_ids, timeline))
        ):
            summary, heroes = await self._summary(comp, room_id, hi, lazy=lazy)

        if lazy:
            state_ids = await self._lazy_members(
                comp, room_id, state_ids, state_pos, timeline, heroes, whole_state
            )
        return state_ids, summary

    async def _members_changed(
        self, room_id: str, lo: int | None, hi: int, timeline: TimelineSlice
    ) -> bool:
        if lo is None:
            return True
        if timeline.complete:
            return any(pe.event.type == MEMBER for pe in timeline.events)
        return await self.sync_store.has_member_events_between(room_id, lo, hi)

    async def _prefetch_summaries(self, comp: _Computation, at: Sequence[tuple[str, int]]) -> None:
        """What `_summary` reads for these rooms, in two queries for all of them."""
        if not at:
            return
        member_ids: list[str] = []
        naming_ids: list[str] = []
        for room_id, pos in at:
            state = await comp.states.state_at(room_id, pos)
            member_ids += [eid for key, eid in state.items() if key[0] == MEMBER]
            naming_ids += [
                eid for key, eid in state.items() if key in ((ROOM_NAME, ""), (CANONICAL_ALIAS, ""))
            ]
        await self._state_entries(comp, member_ids)
        if comp.req.filter.lazy_load_members:
            await self._load_events(comp, naming_ids)

    async def _summary(
        self, comp: _Computation, room_id: str, hi: int, *, lazy: bool
    ) -> tuple[JsonDict, list[str]]:
        members = await comp.states.state_at(room_id, hi, [(MEMBER, None)])
        entries = await self._state_entries(comp, list(members.values()))
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
        summary: JsonDict = {}
        heroes: list[str] = []
        # Heroes are only required when the room has neither a name nor a canonical alias;
        # with lazy loading, sending them would also mean sending their member events
        # (the spec's RoomSummary), so a named room goes without.
        if not (lazy and await self._is_named(comp, room_id, hi)):
            chosen = sorted(present) or sorted(gone)
            heroes = [user_id for _, user_id in chosen[:HEROES]]
            summary["m.heroes"] = heroes
        summary["m.joined_member_count"] = joined_count
        summary["m.invited_member_count"] = invited_count
        return summary, heroes

    async def _is_named(self, comp: _Computation, room_id: str, pos: int) -> bool:
        naming = await comp.states.state_at(room_id, pos, [(ROOM_NAME, ""), (CANONICAL_ALIAS, "")])
        events = await self._load_events(comp, list(naming.values()))
        for (event_type, _), event_id in naming.items():
            pe = events.get(event_id)
            if pe is None:
                continue
            field = "name" if event_type == ROOM_NAME else "alias"
            value = pe.event.content.get(field)
            if isinstance(value, str) and value:
                return True
        return False

    async def _state_entries(
        self, comp: _Computation, event_ids: Sequence[str]
    ) -> dict[str, StateEntry]:
        missing = [eid for eid in event_ids if eid not in comp.entries]
        if missing:
            comp.entries.update(await self.sync_store.get_state_entries(missing))
        return {eid: comp.entries[eid] for eid in event_ids if eid in comp.entries}

    async def _load_events(
        self, comp: _Computation, event_ids: Sequence[str]
    ) -> dict[str, PersistedEvent]:
        missing = list({eid for eid in event_ids if eid not in comp.events})
        if missing:
            comp.events.update(await self.store.get_events(missing))
        return {eid: comp.events[eid] for eid in event_ids if eid in comp.events}

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
        """Lazy-loading: membership only for the timeline's senders (and the heroes sent
        in the summary, and the user on a fresh room), unless the client already has that
        exact member event. Member changes in an incremental sync's gap are always kept
        (the spec's rule)."""
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

    @staticmethod
    def _state_events(
        comp: _Computation,
        state_ids: Mapping[StateKey, str],
        state_filter: RoomEventFilter,
        room_id: str,
    ) -> list[PersistedEvent]:
        if not state_ids or state_filter.allows_nothing():
            return []
        chosen = [
            pe
            for pe in (comp.events.get(eid) for eid in state_ids.values())
            if pe is not None
            and state_filter.allows_event(pe.event.type, pe.event.sender, room_id, pe.event.content)
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
        query = TimelineQuery(room_id, lo, hi, only_own_membership)
        return (await self.load_timelines(user_id, [query], limit, timeline_filter))[0]

    async def load_timelines(
        self,
        user_id: str,
        queries: Sequence[TimelineQuery],
        limit: int,
        timeline_filter: RoomEventFilter,
        *,
        memberships: Sequence[UserMembership] | None = None,
    ) -> list[TimelineSlice]:
        """`load_timeline` for many rooms at once: each round reads the next batch of every
        room still short of `limit` in one transaction and checks history visibility for
        all of them in one call."""
        scans = [_TimelineScan(q, cursor=q.hi, batch_size=limit + 1) for q in queries]
        active = list(scans)
        while active:
            batches = await self.store.get_room_events_backwards_many(
                [(s.query.room_id, s.cursor, s.query.lo or 0, s.batch_size) for s in active]
            )
            candidates: list[list[PersistedEvent]] = []
            for scan, batch in zip(active, batches, strict=True):
                query = scan.query
                if batch:
                    scan.cursor = batch[-1].stream_ordering - 1
                scan.scanned += len(batch)
                candidates.append(
                    [
                        pe
                        for pe in batch
                        if timeline_filter.allows_event(
                            pe.event.type, pe.event.sender, query.room_id, pe.event.content
                        )
                        and (
                            not query.only_own_membership
                            or (pe.event.type == MEMBER and pe.event.state_key == user_id)
                        )
                    ]
                )
            # (A user's own membership events in a room they never joined are theirs to
            # see whatever the room's history visibility.)
            visible = await self._visible(
                user_id,
                [
                    pe
                    for scan, kept in zip(active, candidates, strict=True)
                    if not scan.query.only_own_membership
                    for pe in kept
                ],
                memberships,
            )
            visible_ids = {pe.event.event_id for pe in visible}
            for scan, batch, kept in zip(active, batches, candidates, strict=True):
                if not scan.query.only_own_membership:
                    kept = [pe for pe in kept if pe.event.event_id in visible_ids]
                if len(kept) != len(batch):
                    scan.complete = False
                scan.collected.extend(kept)
                if len(batch) < scan.batch_size:
                    scan.exhausted = True
                    scan.done = True
                elif scan.scanned >= self.limits.max_timeline_scan:
                    scan.done = True
                else:
                    scan.batch_size = min(max(limit + 1, 50), 1000)
                    scan.done = len(scan.collected) > limit
            active = [s for s in active if not s.done]
        return [_slice(scan, limit) for scan in scans]

    async def _visible(
        self,
        user_id: str,
        events: list[PersistedEvent],
        memberships: Sequence[UserMembership] | None = None,
    ) -> list[PersistedEvent]:
        visibility = self.extras.get("visibility")
        if visibility is None or not events:
            return events
        if memberships is None:
            result = visibility.filter_events_for_user(user_id, events)
        else:
            result = visibility.filter_events_for_user(user_id, events, memberships=memberships)
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


def _start_pos(timeline: TimelineSlice, hi: int) -> int:
    """The position just before the timeline's first event (the window's end if empty)."""
    return timeline.events[0].stream_ordering - 1 if timeline.events else hi


def _naming_changed(state_ids: Mapping[StateKey, str], timeline: TimelineSlice) -> bool:
    naming = ((ROOM_NAME, ""), (CANONICAL_ALIAS, ""))
    return any(key in state_ids for key in naming) or any(
        pe.event.key in naming for pe in timeline.events if pe.event.state_key is not None
    )


def _slice(scan: _TimelineScan, limit: int) -> TimelineSlice:
    collected = scan.collected  # newest first
    limited = not scan.exhausted or len(collected) > limit
    events = list(reversed(collected[:limit])) if limit > 0 else []
    if events:
        prev_pos = events[0].stream_ordering - 1
    elif limited:
        prev_pos = scan.cursor
    else:
        prev_pos = scan.query.hi
    return TimelineSlice(events, limited, prev_pos, scan.complete and not limited)


def _unmoved(source: SyncSource, req: SyncSourceRequest) -> bool:
    """The source says it has nothing to add when its stream has not moved since the
    client's token and no room was newly joined (see `SyncSource` in sources.py)."""
    return (
        getattr(source, "quiet_when_unmoved", False) is True
        and req.since is not None
        and not req.full_state
        and req.up_to <= req.since
        and not req.newly_joined_room_ids
    )


def _future_token(stream: str) -> MatrixError:
    return MatrixError(
        400, "M_INVALID_PARAM", f"since token is invalid: its {stream} position is from the future"
    )
