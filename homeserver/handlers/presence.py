"""Presence (online / unavailable / offline, status message, last activity), on the
`presence` stream. Users see the presence of everyone they share a joined room with.

Who is present is decided on the presence stream's writer. Each process tells it who is
syncing there (SyncingReporter: batched transitions, a user's first /sync beginning and
last one ending, plus the whole set now and then; steady long-polling costs no call), and
of activity (PUT /presence, sending events). A periodic sweep there
(`presence.sweep_interval_ms`) writes the automatic transitions as ordinary presence
writes, so followers and /sync see them:
- `online` with no activity for `presence.idle_timeout_ms` becomes `unavailable`;
- `online`/`unavailable` with no /sync in flight and none seen for
  `presence.offline_timeout_ms` becomes `offline` (a parked long-poll counts as syncing);
- states a user set themselves with PUT (`unavailable`, `offline`) are left alone.
A long-poll is not activity: syncing keeps a user present, not active.
Between sweeps, an idle `online` row still reads as `unavailable` (computed when read).

The writer's view of who is syncing lives in memory: after it restarts, every present
user gets a fresh `offline_timeout_ms` (counted from the start) to show up again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet import defer, task

from homeserver.handlers.writes import Writes
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.presence import PresenceRow, PresenceStore
from workers.config import PresenceConfig

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext
    from homeserver.handlers.stream_writer import StreamWriter

logger = logging.getLogger(__name__)

STREAM = "presence"
STATES = ("online", "unavailable", "offline")
# Keeps whatever status message is stored.
KEEP = object()
# Client set_presence values under which a /sync keeps its user present.
SYNC_PRESENT_STATES = ("online", "unavailable")


def presence_content(row: PresenceRow, now_ms: int, config: PresenceConfig) -> dict[str, Any]:
    """The m.presence content (and GET /presence body) of a stored row, as of now."""
    ago = max(0, now_ms - row.last_active_ts)
    state = row.state
    if state == "online" and ago > config.idle_timeout_ms:
        state = "unavailable"
    content: dict[str, Any] = {"presence": state, "last_active_ago": ago}
    if state == "online":
        content["currently_active"] = ago <= config.active_window_ms
    if row.status_msg is not None:
        content["status_msg"] = row.status_msg
    return content


class PresenceRows(Protocol):
    """The part of PresenceStore the writer uses (a fake in unit tests)."""

    async def get(self, user_id: str) -> PresenceRow | None: ...

    async def put(
        self, stream_id: int, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> None: ...

    async def get_present(self) -> list[PresenceRow]: ...

    async def get_joined_rooms(self, user_ids: list[str]) -> set[str]: ...


class PositionWriter(Protocol):
    async def write(self, store: Any, on_visible: Callable[[], None] | None = None) -> Any: ...


@attrs.frozen(slots=True)
class SweepChange:
    user_id: str
    state: str


class PresenceWriter:
    """Runs on the presence stream's writer."""

    def __init__(
        self,
        store: PresenceRows,
        writer: PositionWriter | StreamWriter,
        notifier: Notifier,
        clock_ms: Callable[[], int],
        config: PresenceConfig | None = None,
        max_sync_ms: int = 300_000,
    ) -> None:
        self.store = store
        self.writer = writer
        self.notifier = notifier
        self.clock_ms = clock_ms
        self.config = config or PresenceConfig()
        # A /sync in flight longer than this (its longest timeout plus slack) is presumed
        # lost, e.g. its process died before reporting its end.
        self.sync_lease_ms = max_sync_ms + self.config.offline_timeout_ms
        self.started_ms = clock_ms()
        # user -> when a /sync or other presence-touching request was last seen.
        self.last_seen: dict[str, int] = {}
        # user -> start times of their /sync requests in flight.
        self.in_flight: dict[str, list[int]] = {}
        # Users whose current unavailable/offline state they set themselves (PUT).
        self.user_set: set[str] = set()

    # -- writes ---------------------------------------------------------------------

    async def _write(
        self, user_id: str, state: str, status_msg: str | None, last_active: int
    ) -> None:
        # Everyone sharing a room with the user is interested.
        rooms = await self.store.get_joined_rooms([user_id])

        async def store(pos: int) -> None:
            await self.store.put(pos, user_id, state, status_msg, last_active)

        def wake() -> None:
            self.notifier.wake_user(user_id)
            for room_id in rooms:
                self.notifier.wake_room(room_id)

        await self.writer.write(store, wake)

    async def set_presence(self, user_id: str, state: str, status_msg: Any = KEEP) -> None:
        """The user sets their state (PUT /presence): last active becomes now when going
        online; unavailable and offline keep the last activity and are left alone by the
        sweep."""
        current = await self.store.get(user_id)
        now = self.clock_ms()
        self.last_seen[user_id] = now
        if status_msg is KEEP:
            status_msg = current.status_msg if current is not None else None
        last_active = now if state == "online" or current is None else current.last_active_ts
        if state == "online":
            self.user_set.discard(user_id)
        else:
            self.user_set.add(user_id)
        await self._write(user_id, state, status_msg, last_active)

    async def on_sync_start(self, user_id: str, set_presence: str) -> None:
        """A /sync with set_presence online/unavailable began: the user is present while it
        runs. `online` brings an offline (or new) user online; it does not count as
        activity otherwise, so it neither refreshes last active nor undoes idleness."""
        now = self.clock_ms()
        self.last_seen[user_id] = now
        self.in_flight.setdefault(user_id, []).append(now)
        current = await self.store.get(user_id)
        status_msg = current.status_msg if current is not None else None
        if set_presence == "online":
            if current is None or current.state == "offline":
                self.user_set.discard(user_id)
                await self._write(user_id, "online", status_msg, now)
        elif set_presence == "unavailable":
            if current is None or current.state != "unavailable":
                self.user_set.discard(user_id)
                last_active = current.last_active_ts if current is not None else now
                await self._write(user_id, "unavailable", status_msg, last_active)

    def on_sync_end(self, user_id: str, at_ms: int | None = None) -> None:
        ended = self.clock_ms() if at_ms is None else at_ms
        self.last_seen[user_id] = max(self.last_seen.get(user_id, ended), ended)
        starts = self.in_flight.get(user_id)
        if starts:
            starts.pop(0)
            if not starts:
                del self.in_flight[user_id]

    async def on_syncing(self, notice: SyncingNotice) -> None:
        """One process's batch: syncs that began there (a user's first), syncs still
        running (the periodic whole set), and syncs that ended (a user's last, with when).
        A user both begun and ended in one batch began first."""
        now = self.clock_ms()
        for user_id, state in notice.started:
            await self.on_sync_start(user_id, state)
        begun = set(notice.started)
        for user_id, state in notice.still:
            if (user_id, state) in begun:
                continue
            starts = self.in_flight.get(user_id)
            if starts:
                # Still running: the lease counts from now.
                self.in_flight[user_id] = [now] * len(starts)
                self.last_seen[user_id] = now
            else:
                # Its start was lost (or this writer restarted): begin it now.
                await self.on_sync_start(user_id, state)
        for user_id, ended_ms in notice.ended:
            self.on_sync_end(user_id, min(ended_ms, now))

    async def on_activity(self, user_id: str) -> None:
        """The user did something (e.g. sent an event): last active becomes now and an idle
        user is online again. Offline users stay offline (a /sync brings them online), and
        a self-set unavailable keeps its state."""
        now = self.clock_ms()
        self.last_seen[user_id] = now
        current = await self.store.get(user_id)
        if current is None or current.state == "offline":
            return
        if current.state == "online" and now - current.last_active_ts < (
            self.config.active_window_ms
        ):
            return
        state = "unavailable" if user_id in self.user_set else "online"
        await self._write(user_id, state, current.status_msg, now)

    # -- the sweep ------------------------------------------------------------------

    def is_syncing(self, user_id: str, now: int) -> bool:
        starts = self.in_flight.get(user_id)
        if not starts:
            return False
        live = [s for s in starts if now - s <= self.sync_lease_ms]
        if live:
            self.in_flight[user_id] = live
            return True
        del self.in_flight[user_id]
        return False

    def sweep_changes(self, rows: list[PresenceRow], now: int) -> list[SweepChange]:
        """What the sweep writes, given the present users' rows."""
        out: list[SweepChange] = []
        for row in rows:
            if row.state not in SYNC_PRESENT_STATES:
                continue
            if row.state == "unavailable" and row.user_id in self.user_set:
                continue
            seen = max(self.last_seen.get(row.user_id, self.started_ms), row.last_active_ts)
            if not self.is_syncing(row.user_id, now) and (
                now - seen > self.config.offline_timeout_ms
            ):
                out.append(SweepChange(row.user_id, "offline"))
            elif row.state == "online" and now - row.last_active_ts > self.config.idle_timeout_ms:
                out.append(SweepChange(row.user_id, "unavailable"))
        return out

    async def sweep(self) -> int:
        """Writes the automatic transitions due now; returns how many."""
        rows = await self.store.get_present()
        changes = self.sweep_changes(rows, self.clock_ms())
        for change in changes:
            # Decide again on a fresh read: requests may have come in while earlier
            # writes ran.
            current = await self.store.get(change.user_id)
            if current is None or self.sweep_changes([current], self.clock_ms()) != [change]:
                continue
            self.user_set.discard(change.user_id)
            await self._write(
                change.user_id, change.state, current.status_msg, current.last_active_ts
            )
        # Forget who was seen long ago and is no longer present.
        present = {r.user_id for r in rows}
        horizon = self.clock_ms() - self.config.offline_timeout_ms
        for user_id in [u for u, t in self.last_seen.items() if t < horizon]:
            if user_id not in present and user_id not in self.in_flight:
                del self.last_seen[user_id]
        self.user_set &= present
        return len(changes)


@attrs.frozen(slots=True)
class SyncingNotice:
    """What one process tells the presence writer about the /syncs it serves."""

    # (user, set_presence) whose first /sync on the process began.
    started: tuple[tuple[str, str], ...] = ()
    # (user, set_presence) with a /sync in flight (the periodic whole set).
    still: tuple[tuple[str, str], ...] = ()
    # (user, when in ms) whose last /sync on the process ended.
    ended: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "started": [list(k) for k in self.started],
            "still": [list(k) for k in self.still],
            "ended": [list(k) for k in self.ended],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncingNotice:
        def pairs(key: str) -> list[tuple[str, str]]:
            out = []
            for item in data.get(key) or ():
                user_id, state = item
                if not isinstance(user_id, str) or state not in SYNC_PRESENT_STATES:
                    raise ValueError(f"bad {key} entry {item!r}")
                out.append((user_id, str(state)))
            return out

        ended = []
        for item in data.get("ended") or ():
            user_id, at = item
            if not isinstance(user_id, str) or not isinstance(at, int) or isinstance(at, bool):
                raise ValueError(f"bad ended entry {item!r}")
            ended.append((user_id, at))
        return cls(tuple(pairs("started")), tuple(pairs("still")), tuple(ended))

    def __bool__(self) -> bool:
        return bool(self.started or self.still or self.ended)


class SyncingReporter:
    """Tells the presence writer who is syncing on this process, so that steady syncing
    costs no call at all: only transitions (a user's first /sync here began, their last
    one ended), batched, one call at a time so they arrive in order, and the whole set
    every half `offline_timeout_ms` so a lost notice (or a restarted writer) heals.

    The end of a user's last /sync is held for `sync_notice_interval_ms`: a client
    long-polls back to back, and the next /sync cancels it, so a steadily syncing user
    costs the writer nothing between refreshes."""

    def __init__(
        self,
        send: Callable[[SyncingNotice], Awaitable[None]],
        clock: Any,
        config: PresenceConfig,
    ) -> None:
        self.send = send
        self.clock = clock
        self.hold_ms = config.sync_notice_interval_ms
        self.refresh_ms = max(1, config.offline_timeout_ms // 2)
        self._counts: dict[tuple[str, str], int] = {}
        self._started: list[tuple[str, str]] = []
        # (user, set_presence) -> when its last /sync here ended (not yet told).
        self._ended: dict[tuple[str, str], int] = {}
        self._next_refresh_ms = self._now_ms() + self.refresh_ms
        self._sending = False
        self._soon: Any = None
        # Beginnings not yet taken by the writer -> the /syncs waiting for that.
        self._told: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = clock
        self._loop.start(self.hold_ms / 1000.0, now=False)

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()

    def sync_started(self, user_id: str, state: str) -> defer.Deferred[None] | None:
        """None when the writer already counts the user as syncing here; otherwise a
        Deferred that fires once the writer has taken the beginning (or failed to), which
        the first /sync of a user waits for, so a user coming online sees it there."""
        key = (user_id, state)
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        if count:
            return None
        if self._ended.pop(key, None) is not None:
            return None  # its end was never told: to the writer it never stopped
        if key not in self._started:
            self._started.append(key)
        # A beginning is told at once (it may bring the user online); ends wait.
        if self._soon is None or not self._soon.active():
            self._soon = self.clock.callLater(0, self.flush)
        told: defer.Deferred[None] = defer.Deferred()
        self._told.setdefault(key, []).append(told)
        return told

    def sync_finished(self, user_id: str, state: str) -> None:
        key = (user_id, state)
        count = self._counts.get(key, 0)
        if count > 1:
            self._counts[key] = count - 1
            return
        self._counts.pop(key, None)
        self._ended[key] = self._now_ms()

    def syncing(self) -> int:
        """Users (per set_presence) with a /sync in flight here."""
        return len(self._counts)

    def flush(self) -> None:
        if self._sending:
            return  # the call in flight flushes again when it returns
        now = self._now_ms()
        due = [k for k, at in self._ended.items() if now - at >= self.hold_ms]
        still: tuple[tuple[str, str], ...] = ()
        if now >= self._next_refresh_ms:
            self._next_refresh_ms = now + self.refresh_ms
            still = tuple(self._counts)
        ended = [(key, self._ended.pop(key)) for key in due]
        notice = SyncingNotice(
            tuple(self._started), still, tuple((key[0], at) for key, at in ended)
        )
        self._started = []
        if notice:
            defer.ensureDeferred(self._send(notice, ended))

    async def _send(self, notice: SyncingNotice, ended: list[tuple[tuple[str, str], int]]) -> None:
        self._sending = True
        try:
            await self.send(notice)
        except Exception as e:
            # Best effort, told again: beginnings whose sync still runs, and every end
            # (unless a new sync began meanwhile).
            logger.warning("could not tell the presence writer who syncs", extra={"error": repr(e)})
            for key, at in ended:
                if key not in self._counts:
                    self._ended.setdefault(key, at)
            retry = [k for k in notice.started if k in self._counts or k in self._ended]
            self._started = retry + self._started
        finally:
            self._sending = False
            # Whatever happened, the /syncs that waited go on (a failure is told again).
            for key in notice.started:
                for told in self._told.pop(key, ()):
                    if not told.called:  # a /sync cancelled meanwhile
                        told.callback(None)
        if self._started:
            self.flush()


class PresenceActivity:
    """Tells the presence writer (through a SyncingReporter: only a user's first /sync
    waits for it) when syncs start and end (the `set_presence` parameter online or
    unavailable keeps its user present), and when a user does something."""

    def __init__(
        self,
        store: PresenceStore,
        writes: Writes,
        config: PresenceConfig,
        clock_ms: Callable[[], int],
        reporter: SyncingReporter | None = None,
    ) -> None:
        self.store = store
        self.writes = writes
        self.config = config
        self.clock_ms = clock_ms
        self.reporter = reporter

    async def _call(self, op: str, args: dict[str, Any]) -> None:
        try:
            await self.writes.call(op, args)
        except Exception as e:
            # Presence is best effort: an unreachable presence writer must not fail /sync.
            logger.warning("could not record presence activity", extra={"error": repr(e)})

    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None:
        if self.reporter is None or set_presence not in SYNC_PRESENT_STATES:
            return
        told = self.reporter.sync_started(user_id, set_presence)
        if told is not None:
            # Only a user's first /sync here waits; back-to-back long-polls do not.
            await told

    def on_sync_finished(self, user_id: str, device_id: str, set_presence: str) -> None:
        if self.reporter is None or set_presence not in SYNC_PRESENT_STATES:
            return
        self.reporter.sync_finished(user_id, set_presence)

    def on_user_activity(self, user_id: str) -> None:
        """The user did something (sent an event). Fire and forget; skipped while their
        stored last activity is fresh."""
        if self.config.enabled:
            defer.ensureDeferred(self._activity(user_id))

    async def _activity(self, user_id: str) -> None:
        current = await self.store.get(user_id)
        if current is None or current.state == "offline":
            return
        if current.state == "online" and (
            self.clock_ms() - current.last_active_ts < self.config.active_window_ms
        ):
            return
        await self._call("presence_activity", {"user_id": user_id})


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await PresenceStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    store = PresenceStore(ctx.db)
    users = await store.get_changed_users(after, up_to)
    rooms = await store.get_joined_rooms(users)
    wakeups = Wakeups(users=frozenset(users), rooms=frozenset(rooms))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, wakeups))


# -- /sync ------------------------------------------------------------------------------


class PresenceSyncSource:
    stream = STREAM
    # Nothing new when the stream has not moved (see homeserver.sync.sources).
    quiet_when_unmoved = True

    def __init__(self, ctx: HomeServerContext, activity: PresenceActivity) -> None:
        self.ctx = ctx
        self.store = PresenceStore(ctx.db)
        self.activity = activity

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None:
        await self.activity.on_sync_request(user_id, device_id, set_presence)

    def on_sync_finished(self, user_id: str, device_id: str, set_presence: str) -> None:
        self.activity.on_sync_finished(user_id, device_id, set_presence)

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        config = self.ctx.config.presence
        if not config.enabled:
            return SyncContribution()
        users = await self.store.get_users_sharing_rooms(req.joined_room_ids)
        users.add(req.user_id)
        since = None if req.full_state else req.since
        rows = await self.store.get_for_users(users, since, req.up_to)
        if since is not None and req.newly_joined_room_ids:
            # People met in rooms joined in this window: their current presence.
            met = await self.store.get_users_sharing_rooms(req.newly_joined_room_ids)
            have = {r.user_id for r in rows}
            rows += await self.store.get_for_users(met - have, None, req.up_to)
        now = self.ctx.clock_ms()
        events = [
            {"type": "m.presence", "sender": r.user_id, "content": presence_content(r, now, config)}
            for r in rows
        ]
        return SyncContribution(
            global_sections={"presence": events} if events else {}, has_data=bool(events)
        )
