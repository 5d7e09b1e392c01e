"""Every membership event of a user, cached per user and invalidated by the events stream.

/sync reads a user's membership history on every computation (which rooms are joined,
invited, left) and again to know which rooms a long-poll listens to. Between membership
changes of that user it cannot change, so it is kept here and dropped when the events
stream carries a `m.room.member` row for the user (the notifier hands every row to
`on_rows`, on the writer after a persist and on followers as they catch up).

Two guards keep a cached entry from hiding a change:
* a read that overlaps an invalidation of its user is not stored (it may predate the
  change);
* an entry read when this process's events position was `read_at` answers for a position
  `pos` only if every row up to `pos` has been seen by `on_rows` (or `pos <= read_at`):
  a process may advance its position a moment before the rows reach the notifier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import attrs

from storage.stores.events import StreamRow
from storage.stores.sync import UserMembership

MEMBER = "m.room.member"
DEFAULT_MAX_USERS = 50_000


@attrs.frozen(slots=True)
class _Entry:
    rows: tuple[UserMembership, ...]
    read_at: int


class UserMembershipCache:
    def __init__(
        self,
        fetch: Callable[[str], Awaitable[list[UserMembership]]],
        position: Callable[[], int],
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        self._fetch = fetch
        self._position = position
        self.max_users = max_users
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # The highest position of a row handed to on_rows (rows arrive in order).
        self._rows_seen_up_to = 0
        # Users with a read in flight -> number of reads; users invalidated meanwhile.
        self._reading: dict[str, int] = {}
        self._stale_reads: set[str] = set()

    def on_rows(self, rows: Iterable[StreamRow]) -> None:
        for row in rows:
            if row.stream_ordering > self._rows_seen_up_to:
                self._rows_seen_up_to = row.stream_ordering
            if row.type == MEMBER and row.state_key:
                self.invalidate(row.state_key)

    def invalidate(self, user_id: str) -> None:
        self._entries.pop(user_id, None)
        if user_id in self._reading:
            self._stale_reads.add(user_id)

    async def get(self, user_id: str, pos: int) -> tuple[UserMembership, ...]:
        """Every membership event of the user, oldest first; complete at least up to `pos`
        (rows beyond it may be included: callers filter by position)."""
        entry = self._entries.get(user_id)
        if entry is not None and pos <= max(entry.read_at, self._rows_seen_up_to):
            self._entries.move_to_end(user_id)
            return entry.rows
        read_at = self._position()
        self._reading[user_id] = self._reading.get(user_id, 0) + 1
        try:
            rows = tuple(await self._fetch(user_id))
        finally:
            stale = user_id in self._stale_reads
            left = self._reading[user_id] - 1
            if left:
                self._reading[user_id] = left
            else:
                del self._reading[user_id]
                self._stale_reads.discard(user_id)
        if not stale:
            self._entries[user_id] = _Entry(rows, read_at)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)
        return rows

    def __len__(self) -> int:
        return len(self._entries)
