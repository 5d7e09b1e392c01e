"""Which rooms have new events since a position, from the events stream this process saw.

An incremental /sync needs the joined rooms with events in (since, pos]. The notifier
hands every row of the events stream to `on_rows` (in order, on the writer and on
followers), so the newest position of each room is known here from the first row this
process saw onwards, and the question needs the database only when it reaches back
before that, when `pos` is beyond the rows seen so far (the position may move a moment
before the rows arrive), or for a room whose newest event is beyond `pos`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from storage.stores.events import StreamRow

DEFAULT_MAX_ROOMS = 100_000


class RoomChangeCache:
    def __init__(self, max_rooms: int = DEFAULT_MAX_ROOMS) -> None:
        self.max_rooms = max_rooms
        # room_id -> the position of its newest event seen; least recently changed first.
        self._latest: OrderedDict[str, int] = OrderedDict()
        # Every row after this position has been seen (None: no row seen yet). A room
        # not in _latest has had no event in (_complete_after, _seen_up_to].
        self._complete_after: int | None = None
        self._seen_up_to = 0

    def on_rows(self, rows: Iterable[StreamRow]) -> None:
        for row in rows:
            if self._complete_after is None:
                self._complete_after = row.stream_ordering - 1
            self._latest.pop(row.room_id, None)
            self._latest[row.room_id] = row.stream_ordering
            self._seen_up_to = max(self._seen_up_to, row.stream_ordering)
        while len(self._latest) > self.max_rooms:
            _, evicted = self._latest.popitem(last=False)
            assert self._complete_after is not None
            # Rooms forgotten here changed at or before `evicted`.
            self._complete_after = max(self._complete_after, evicted)

    def changed(self, room_ids: Iterable[str], since: int, pos: int) -> tuple[set[str], list[str]]:
        """(rooms known to have events in (since, pos], rooms this cache cannot answer for);
        the rest had none."""
        rooms = list(room_ids)
        if self._complete_after is None or since < self._complete_after or pos > self._seen_up_to:
            return set(), rooms
        changed: set[str] = set()
        unknown: list[str] = []
        for room_id in rooms:
            latest = self._latest.get(room_id)
            if latest is None or latest <= since:
                continue
            if latest <= pos:
                changed.add(room_id)
            else:
                # Newer than pos: whether it also had one in (since, pos] is not known.
                unknown.append(room_id)
        return changed, unknown
