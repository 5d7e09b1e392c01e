"""Room state at a stream position, for /sync and /messages.

Uses the StateStore (state groups, `ctx.extras["state_store"]`) when the process has one:
the state at position P is the state after the room's newest event at or before P.
Without it, or for an event it has no group for, the state is computed from the
stream-ordered state events (the same thing for the linear rooms one server writes).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from homeserver.events.event import StateKey
from storage.stores.sync import SyncStore

logger = logging.getLogger(__name__)

# (type, state_key) pairs; a state_key of None means every key of that type.
TypeFilter = Collection[tuple[str, str | None]]


def apply_types(state: dict[StateKey, str], types: TypeFilter | None) -> dict[StateKey, str]:
    if types is None:
        return state
    whole_types = {t for t, sk in types if sk is None}
    exact = {(t, sk) for t, sk in types if sk is not None}
    return {k: v for k, v in state.items() if k[0] in whole_types or k in exact}


class RoomStateReader:
    def __init__(self, sync_store: SyncStore, state_store: Any | None) -> None:
        self.sync_store = sync_store
        self.state_store = state_store
        # Per reader (one /sync computation): the same (room, pos) is often asked twice.
        self._memo: dict[tuple[str, int], dict[StateKey, str]] = {}

    async def state_at(
        self, room_id: str, pos: int, types: TypeFilter | None = None
    ) -> dict[StateKey, str]:
        full = self._memo.get((room_id, pos))
        if full is not None:
            return apply_types(full, types)
        if types is not None and self.state_store is not None:
            found = await self._from_state_store(room_id, pos, types)
            if found is not None:
                return found
        full = await self._full_state_at(room_id, pos)
        self._memo[(room_id, pos)] = full
        return apply_types(full, types)

    async def prefetch(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Reads the whole state of each (room_id, pos) not yet read, for all of them in a
        few queries, so that `state_at` then answers them from memory."""
        missing = [key for key in dict.fromkeys(wanted) if key not in self._memo]
        if not missing:
            return
        if self.state_store is not None:
            last = await self.sync_store.get_last_events_at_many(missing)
            for key in missing:
                if key not in last:
                    self._memo[key] = {}
            with_event = [key for key in missing if key in last]
            states = await self.state_store.get_state_ids_after_many(
                [last[key][0] for key in with_event], None
            )
            missing = []
            for key in with_event:
                state = states.get(last[key][0])
                if state is None:
                    logger.warning(
                        "no state group for event; using stream order",
                        extra={"event_id": last[key][0]},
                    )
                    missing.append(key)
                else:
                    self._memo[key] = dict(state)
        if missing:
            entries = await self.sync_store.get_state_at_many(missing)
            for key in missing:
                self._memo[key] = {k: e.event_id for k, e in entries[key].items()}

    async def _full_state_at(self, room_id: str, pos: int) -> dict[StateKey, str]:
        if self.state_store is not None:
            found = await self._from_state_store(room_id, pos, None)
            if found is not None:
                return found
        entries = await self.sync_store.get_state_at(room_id, pos)
        return {key: entry.event_id for key, entry in entries.items()}

    async def _from_state_store(
        self, room_id: str, pos: int, types: TypeFilter | None
    ) -> dict[StateKey, str] | None:
        assert self.state_store is not None
        last = await self.sync_store.get_last_event_at(room_id, pos)
        if last is None:
            return {}
        try:
            return dict(await self.state_store.get_state_ids_after(last[0], types))
        except LookupError:  # StateNotFoundError: an event stored without a state group
            logger.warning(
                "no state group for event; using stream order", extra={"event_id": last[0]}
            )
            return None
