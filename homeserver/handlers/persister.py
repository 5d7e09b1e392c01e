"""EventPersister: the only code that writes the events stream (runs on its writer)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from homeserver.events.event import Event
from homeserver.notifier import Notifier
from replication.streams import StreamIdGenerator, StreamPositionTracker
from storage.stores.event_persist import EventPersistStore
from storage.stores.events import StreamRow

logger = logging.getLogger(__name__)


class EventPersister:
    def __init__(
        self,
        store: EventPersistStore,
        id_gen: StreamIdGenerator,
        tracker: StreamPositionTracker,
        notifier: Notifier,
        publish_position: Callable[[int], None],
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.id_gen = id_gen
        self.tracker = tracker
        self.notifier = notifier
        self.publish_position = publish_position
        self.clock_ms = clock_ms
        self._pending: dict[int, StreamRow] = {}

    async def persist(
        self,
        event: Event,
        *,
        new_room_creator: str | None = None,
        txn: tuple[str, str, str] | None = None,
    ) -> int:
        """Stores the event; returns its stream position once readers may see it."""
        pos = self.id_gen.allocate()
        logger.debug("persisting", extra={"pos": pos, "event_id": event.event_id})
        ok = False
        try:
            await self.store.persist_event(
                event, pos, self.clock_ms(), new_room_creator=new_room_creator, txn=txn
            )
            ok = True
        finally:
            if ok:
                self._pending[pos] = StreamRow(
                    pos,
                    event.room_id,
                    event.type,
                    event.state_key,
                    event.membership if event.type == "m.room.member" else None,
                )
            before = self.id_gen.current
            logger.debug("persisted", extra={"pos": pos, "ok": ok, "current": before})
            if self.id_gen.finish(pos):
                self._announce(before, self.id_gen.current)
        if self.tracker.position < pos:
            # An earlier position is still committing: callers (and the workers they
            # answer) must not see our position before readers can see our event.
            await self.tracker.wait_for(pos, 3600)
        return pos

    def _announce(self, before: int, current: int) -> None:
        rows = [self._pending.pop(p) for p in range(before + 1, current + 1) if p in self._pending]
        # Caches see the rows before the position moves; listeners wake after it has.
        self.notifier.observe_rows(rows)
        self.tracker.advance(current)
        self.notifier.wake_for_rows(rows)
        self.publish_position(current)
