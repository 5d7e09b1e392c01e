"""Typing notifications: kept in memory on the `typing` stream's writer, mirrored by followers.

The writer holds, per room, who is typing and the stream position of the room's last
change; each change (start, stop, expiry) takes a new position. Followers fetch the
changed rooms from the writer (`GET /_ganglion/replication/rows/typing`), since nothing
is stored in the database.

Positions must keep growing across writer restarts (followers and clients hold old ones),
so the writer reserves them in blocks in the database (`stream_high_water`) before handing
them out, and a restarted writer starts above the last reservation. Positions stay small,
which keeps sync tokens short. A restarted writer has forgotten who was typing, and tells
followers so with a `reset` row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer

from homeserver.handlers.stream_writer import StreamWriter, get_stream_writer
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.high_water import HighWaterStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

logger = logging.getLogger(__name__)

STREAM = "typing"
_STATE_KEY = "typing"
_EPOCH_KEY = "typing_epoch"
# Positions are reserved this many at a time, re-reserving when fewer than the margin remain.
_RESERVE_BLOCK = 1000
_RESERVE_MARGIN = 100


@attrs.frozen(slots=True)
class RoomTyping:
    # Position of the room's last change.
    pos: int
    user_ids: tuple[str, ...]


class TypingState:
    """One process's view of who is typing where."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.rooms: dict[str, RoomTyping] = {}
        # A follower has fetched the writer's whole picture once.
        self.synced = False

    def typing_in(self, room_id: str) -> tuple[str, ...]:
        entry = self.rooms.get(room_id)
        return entry.user_ids if entry is not None else ()

    def changes(
        self, room_ids: Collection[str], since: int | None, up_to: int, full_rooms: Collection[str]
    ) -> dict[str, tuple[str, ...]]:
        """room -> who is typing, for rooms changed in (since, up_to] (since None, and the
        rooms in `full_rooms`: every room where someone is typing)."""
        out: dict[str, tuple[str, ...]] = {}
        for room_id in room_ids:
            entry = self.rooms.get(room_id)
            if entry is None:
                continue
            if since is None or room_id in full_rooms:
                if entry.user_ids:
                    out[room_id] = entry.user_ids
            elif since < entry.pos <= up_to:
                out[room_id] = entry.user_ids
        return out

    def apply_rows(self, rows: list[dict[str, Any]]) -> set[str]:
        """Rows from the writer: {"pos", "room_id", "user_ids"} or {"pos", "reset": true}.
        Returns the rooms that changed; waking them is the caller's, once the stream's
        position covers the rows."""
        changed: set[str] = set()
        for row in rows:
            pos = int(row["pos"])
            if row.get("reset"):
                for room_id, entry in list(self.rooms.items()):
                    if entry.user_ids:
                        self.rooms[room_id] = RoomTyping(pos, ())
                        changed.add(room_id)
                continue
            room_id = str(row["room_id"])
            self.rooms[room_id] = RoomTyping(pos, tuple(str(u) for u in row["user_ids"]))
            changed.add(room_id)
        return changed


class TypingWriter(TypingState):
    """The writer's state: changes take stream positions; typing expires on timers."""

    def __init__(
        self,
        notifier: Notifier,
        writer: StreamWriter,
        clock: Any,
        max_timeout_ms: int,
        epoch: int,
        high_water: HighWaterStore | None = None,
    ) -> None:
        super().__init__(notifier)
        self.writer = writer
        self.high_water = high_water
        self._reserved = epoch
        self._reserve_lock = defer.DeferredLock()
        self.clock = clock
        self.max_timeout_ms = max_timeout_ms
        # Our first position: rows asked for from below it come from a previous writer.
        self.epoch = epoch
        self.synced = True
        self._expiry: dict[tuple[str, str], Any] = {}

    async def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        key = (room_id, user_id)
        timer = self._expiry.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        if typing:
            timeout_s = min(max(timeout_ms, 0), self.max_timeout_ms) / 1000.0
            self._expiry[key] = self.clock.callLater(timeout_s, self._expire, room_id, user_id)
        if (user_id in self.typing_in(room_id)) == typing:
            return  # no visible change (a refresh only moves the expiry)
        await self._reserve_positions()

        async def store(pos: int) -> None:
            users = set(self.typing_in(room_id))
            if typing:
                users.add(user_id)
            else:
                users.discard(user_id)
            self.rooms[room_id] = RoomTyping(pos, tuple(sorted(users)))

        await self.writer.write(store, lambda: self.notifier.wake_room(room_id))

    async def _reserve_positions(self) -> None:
        """Keeps the stored mark ahead of every position we may hand out."""
        if self.high_water is None:
            return
        async with self._reserve_lock:
            # The margin covers changes already past this check but not yet allocated.
            if self.writer.id_gen.next_position + _RESERVE_MARGIN >= self._reserved:
                reserved = self.writer.id_gen.next_position + _RESERVE_BLOCK
                await self.high_water.raise_to(STREAM, reserved)
                self._reserved = reserved

    def _expire(self, room_id: str, user_id: str) -> None:
        self._expiry.pop((room_id, user_id), None)
        d = defer.ensureDeferred(self.set_typing(room_id, user_id, False, 0))
        d.addErrback(lambda f: logger.error("typing expiry failed: %s", f.getErrorMessage()))

    def rows(self, after: int, up_to: int) -> list[dict[str, Any]]:
        """Rooms changed after `after` (with their latest state, possibly beyond up_to)."""
        out: list[dict[str, Any]] = []
        if after < self.epoch:
            out.append({"pos": self.epoch, "reset": True})
            after = 0
        for room_id, entry in self.rooms.items():
            if entry.pos > after:
                out.append({"pos": entry.pos, "room_id": room_id, "user_ids": list(entry.user_ids)})
        out.sort(key=lambda r: int(r["pos"]))
        return out

    def stop(self) -> None:
        for timer in self._expiry.values():
            if timer.active():
                timer.cancel()
        self._expiry.clear()


def typing_state(ctx: HomeServerContext) -> TypingState:
    """This process's typing state (the writer's own on the writer)."""
    state: TypingState | None = ctx.extras.get(_STATE_KEY)
    if state is None:
        if ctx.writes_stream(STREAM):
            state = TypingWriter(
                ctx.notifier,
                get_stream_writer(ctx, STREAM),
                ctx.reactor,
                ctx.config.limits.max_typing_timeout_ms,
                int(ctx.extras.get(_EPOCH_KEY, 0)),
                HighWaterStore(ctx.db),
            )
        else:
            state = TypingState(ctx.notifier)
        ctx.extras[_STATE_KEY] = state
    return state


def typing_writer(ctx: HomeServerContext) -> TypingWriter:
    state = typing_state(ctx)
    assert isinstance(state, TypingWriter), "only the typing stream's writer sets typing"
    return state


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    if not ctx.writes_stream(STREAM):
        # A follower that cannot ask the writer: from the start (its first fetch takes
        # the writer's whole picture anyway).
        return 0
    # Continue above any position a previous writer can have handed out.
    epoch = await HighWaterStore(ctx.db).get(STREAM)
    ctx.extras[_EPOCH_KEY] = epoch
    return epoch


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    state = typing_state(ctx)
    client = ctx.extras["replication_clients"][STREAM]
    # The first fetch takes the whole picture (who was typing before we started).
    rows = await client.rows(STREAM, after if state.synced else 0, up_to)
    state.synced = True
    rooms = frozenset(state.apply_rows(rows))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, Wakeups(rooms=rooms)))


async def serve_rows(ctx: HomeServerContext, after: int, up_to: int) -> list[dict[str, Any]]:
    return typing_writer(ctx).rows(after, up_to)


# -- /sync ------------------------------------------------------------------------------


class TypingSyncSource:
    stream = STREAM
    # Nothing new when the stream has not moved (see homeserver.sync.sources).
    quiet_when_unmoved = True

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        since = None if req.full_state else req.since
        changed = typing_state(self.ctx).changes(
            req.joined_room_ids, since, req.up_to, req.newly_joined_room_ids
        )
        rooms = {
            room_id: {"ephemeral": [{"type": "m.typing", "content": {"user_ids": list(users)}}]}
            for room_id, users in changed.items()
        }
        return SyncContribution(rooms=rooms, has_data=bool(rooms))
