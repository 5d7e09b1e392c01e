"""The `device_lists` stream: who sees whose device list change, and the E2EE /sync fields.

A position is written for every change to a user's device list (a new device, new device
or cross-signing keys, new signatures, a display name change, a deleted device). Whoever
shares a room with that user (and the user) is woken. What one user sees between two
points is `DeviceListChanges.between`:

* changed: users sharing a room with them now (or themselves) whose lists changed in the
  device_lists window; plus, from the events window, the members of rooms they joined and
  the users who joined rooms they are in (their lists may be unknown to the client);
* left: users who left (or whose rooms they left) in the events window and who now share
  no room with them at all. A user in `left` is never also in `changed`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from homeserver.handlers.stream_writer import StreamWriter
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SectionValue, SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.devices import DeviceStore
from storage.stores.events import StreamRow
from storage.stores.keys import KeyStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

STREAM = "device_lists"
# Clients size their one-time key uploads on this count: always report it, even at zero.
ALWAYS_COUNTED_ALGORITHM = "signed_curve25519"

R = TypeVar("R")


class DeviceListChanges:
    """Reads what changed for one user (any process)."""

    def __init__(self, store: DeviceStore) -> None:
        self.store = store

    async def between(
        self,
        user_id: str,
        lists_since: int,
        lists_up_to: int,
        events_since: int | None,
        events_up_to: int,
    ) -> tuple[list[str], list[str]]:
        """(changed, left), sorted."""
        my_rooms = await self.store.get_joined_rooms(user_id)
        peers = await self.store.get_joined_members(my_rooms) | {user_id}
        changed = await self.store.get_changed_among(peers, lists_since, lists_up_to)
        left: set[str] = set()
        if events_since is not None and events_up_to > events_since:
            last_own: dict[str, str] = {}
            for room_id, membership in await self.store.get_own_membership_changes(
                user_id, events_since, events_up_to
            ):
                last_own[room_id] = membership
            joined_rooms = {r for r, m in last_own.items() if m == "join" and r in my_rooms}
            left_rooms = {r for r, m in last_own.items() if m != "join" and r not in my_rooms}
            newly_shared = await self.store.get_joined_members(joined_rooms)
            candidates = await self.store.get_joined_members(left_rooms)
            for _room_id, member, membership in await self.store.get_membership_changes(
                my_rooms, events_since, events_up_to
            ):
                if membership == "join":
                    newly_shared.add(member)
                elif membership in ("leave", "ban"):
                    candidates.add(member)
            # Our own joins change nothing about our own list.
            changed |= newly_shared - {user_id}
            left = {u for u in candidates if u not in peers}
        changed -= left
        return sorted(changed), sorted(left - {user_id})


class DeviceListWriter:
    """Runs on the device_lists stream's writer: every write is at a new position, and
    once it is visible the user and everyone sharing a room with them are woken."""

    def __init__(self, store: DeviceStore, writer: StreamWriter, notifier: Notifier) -> None:
        self.store = store
        self.writer = writer
        self.notifier = notifier

    async def write(self, user_id: str, store: Callable[[int], Awaitable[R]]) -> R:
        rooms = await self.store.get_joined_rooms(user_id)

        def wake() -> None:
            _wake(self.notifier, user_id, rooms)

        result, _ = await self.writer.write(store, wake)
        return result

    async def note_change(self, user_id: str) -> None:
        async def store(pos: int) -> None:
            await self.store.add_change(pos, user_id)

        await self.write(user_id, store)


def _wake(notifier: Notifier, user_id: str, room_ids: set[str]) -> None:
    notifier.wake_user(user_id)
    for room_id in room_ids:
        notifier.wake_room(room_id)


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await DeviceStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    store = DeviceStore(ctx.db)
    users: set[str] = set()
    rooms: set[str] = set()
    for user_id in await store.get_changed_users(after, up_to):
        users.add(user_id)
        rooms.update(await store.get_joined_rooms(user_id))
    wakeups = Wakeups(users=frozenset(users), rooms=frozenset(rooms))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, wakeups))


# -- /sync ------------------------------------------------------------------------------


class DeviceListsSyncSource:
    """`device_lists` (incremental syncs), `device_one_time_keys_count` and
    `device_unused_fallback_key_types` (every sync) of the syncing device."""

    stream = STREAM

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx
        self.changes = DeviceListChanges(DeviceStore(ctx.db))
        self.keys = KeyStore(ctx.db)
        # Membership events are the only events that change device lists. The notifier
        # shows us every events row from here on; rows before `_known_from` we never saw.
        start = ctx.events_tracker.position
        self._known_from = start
        self._rows_seen_up_to = start
        self._last_membership = start
        ctx.notifier.add_row_observer(self._observe_rows)

    def _observe_rows(self, rows: Sequence[StreamRow]) -> None:
        for row in rows:
            self._rows_seen_up_to = max(self._rows_seen_up_to, row.stream_ordering)
            if row.type == "m.room.member":
                self._last_membership = max(self._last_membership, row.stream_ordering)

    def _nothing_can_have_changed(self, req: SyncSourceRequest) -> bool:
        """No device list moved and no membership event anywhere in the events window:
        then `changed` and `left` are empty without asking the database."""
        if req.since is None or req.up_to > req.since or req.events_since is None:
            return False
        return (
            req.events_since >= self._known_from
            and req.events_up_to <= self._rows_seen_up_to
            and self._last_membership <= req.events_since
        )

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        counts, fallback_types = await self.keys.counts_for_sync(req.user_id, req.device_id)
        counts.setdefault(ALWAYS_COUNTED_ALGORITHM, 0)
        sections: dict[str, SectionValue] = {
            "device_one_time_keys_count": counts,
            "device_unused_fallback_key_types": fallback_types,
        }
        has_data = False
        if req.since is not None and self._nothing_can_have_changed(req):
            sections["device_lists"] = {"changed": [], "left": []}
        elif req.since is not None:
            changed, left = await self.changes.between(
                req.user_id, req.since, req.up_to, req.events_since, req.events_up_to
            )
            sections["device_lists"] = {"changed": changed, "left": left}
            has_data = bool(changed or left)
        return SyncContribution(global_sections=sections, has_data=has_data)
