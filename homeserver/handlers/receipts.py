"""Read receipts (m.read, m.read.private, threaded or not), on the `receipts` stream."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from homeserver.handlers.stream_writer import StreamWriter
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.events import EventStore, PersistedEvent
from storage.stores.receipts import PRIVATE_READ, UNTHREADED, ReceiptStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

STREAM = "receipts"
RECEIPT_TYPES = ("m.read", PRIVATE_READ)


async def require_joined(events: EventStore, room_id: str, user_id: str) -> None:
    if (await events.get_rooms_for_user(user_id)).get(room_id) != "join":
        raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")


async def require_event_in_room(events: EventStore, room_id: str, event_id: str) -> PersistedEvent:
    event = await events.get_event(event_id)
    if event is None or event.event.room_id != room_id:
        raise MatrixError(404, "M_NOT_FOUND", "No such event in this room")
    return event


class ReceiptWriter:
    """Runs on the receipts stream's writer."""

    def __init__(
        self,
        store: ReceiptStore,
        events: EventStore,
        writer: StreamWriter,
        notifier: Notifier,
        clock_ms: Any,
    ) -> None:
        self.store = store
        self.events = events
        self.writer = writer
        self.notifier = notifier
        self.clock_ms = clock_ms

    async def set_receipt(
        self, room_id: str, user_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        await require_joined(self.events, room_id, user_id)
        event = await require_event_in_room(self.events, room_id, event_id)
        thread_key = thread_id if thread_id is not None else UNTHREADED
        existing = await self.store.get_event_stream_ordering(
            room_id, receipt_type, user_id, thread_key
        )
        if existing is not None and existing >= event.stream_ordering:
            return  # receipts only move forwards; an older one changes nothing
        data: dict[str, Any] = {"ts": self.clock_ms()}
        if thread_id is not None:
            data["thread_id"] = thread_id

        async def store(pos: int) -> None:
            await self.store.upsert(
                pos,
                room_id,
                receipt_type,
                user_id,
                thread_key,
                event_id,
                event.stream_ordering,
                data,
            )

        def wake() -> None:
            if receipt_type == PRIVATE_READ:
                self.notifier.wake_user(user_id)
            else:
                self.notifier.wake_room(room_id)

        await self.writer.write(store, wake)


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await ReceiptStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    users: set[str] = set()
    rooms: set[str] = set()
    for room_id, receipt_type, user_id in await ReceiptStore(ctx.db).get_changed(after, up_to):
        # A private receipt concerns only its owner.
        if receipt_type == PRIVATE_READ:
            users.add(user_id)
        else:
            rooms.add(room_id)
    wakeups = Wakeups(users=frozenset(users), rooms=frozenset(rooms))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, wakeups))


# -- /sync ------------------------------------------------------------------------------


class ReceiptSyncSource:
    stream = STREAM
    # Nothing new when the stream has not moved (see homeserver.sync.sources).
    quiet_when_unmoved = True

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx
        self.store = ReceiptStore(ctx.db)

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        if req.since is None or req.full_state:
            receipts = await self.store.get_for_rooms(
                req.joined_room_ids, req.user_id, None, req.up_to
            )
        else:
            full = req.joined_room_ids & req.newly_joined_room_ids
            receipts = await self.store.get_for_rooms(full, req.user_id, None, req.up_to)
            receipts += await self.store.get_for_rooms(
                req.joined_room_ids - full, req.user_id, req.since, req.up_to
            )
        # One m.receipt event per room and thread: event_id -> type -> user -> data.
        contents: dict[tuple[str, str | None], dict[str, Any]] = {}
        for r in receipts:
            content = contents.setdefault((r.room_id, r.data.get("thread_id")), {})
            content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = r.data
        rooms: dict[str, dict[str, list[Any]]] = {}
        for (room_id, _), content in contents.items():
            ephemeral = rooms.setdefault(room_id, {"ephemeral": []})["ephemeral"]
            ephemeral.append({"type": "m.receipt", "content": content})
        return SyncContribution(rooms=rooms, has_data=bool(rooms))
