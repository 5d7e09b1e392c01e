"""Wakes long-polling requests when something they care about happens.

Both the single process and every sync worker feed it: the writer straight after a
persist, the others as the replication follower catches up. Either way rows reach the
row observers (caches) before the stream's position moves, and listeners are woken only
after it has moved, so a woken long-poll always sees what woke it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs
from prometheus_client import Gauge
from twisted.internet import defer

from homeserver.clock import Clock
from storage.stores.events import StreamRow

# Long-polls parked right now; tests wait on it to know one is parked before they write.
WAITING_LISTENERS = Gauge(
    "ganglion_sync_waiting_listeners", "Listeners parked in the notifier, waiting to be woken"
)


@attrs.frozen(slots=True)
class Wakeups:
    """Whom a batch of stream rows concerns: woken together once the batch is visible."""

    users: frozenset[str] = frozenset()
    rooms: frozenset[str] = frozenset()


class Listener:
    __slots__ = ("notifier", "user_id", "room_ids", "fired", "_deferred")

    def __init__(self, notifier: Notifier, user_id: str, room_ids: frozenset[str]) -> None:
        self.notifier = notifier
        self.user_id = user_id
        self.room_ids = room_ids
        self.fired = False
        self._deferred: defer.Deferred[bool] | None = None

    def _fire(self) -> None:
        self.fired = True
        d, self._deferred = self._deferred, None
        if d is not None and not d.called:
            d.callback(True)

    def wait(self, timeout_s: float) -> defer.Deferred[bool]:
        """True if woken, False on timeout. Already-fired listeners answer at once."""
        if self.fired:
            return defer.succeed(True)
        d: defer.Deferred[bool] = defer.Deferred()
        self._deferred = d
        call = self.notifier.clock.callLater(timeout_s, self._timeout, d)
        WAITING_LISTENERS.inc()

        def _cleanup(result: bool) -> bool:
            # Runs once however the wait ends: woken, timed out, closed or cancelled.
            WAITING_LISTENERS.dec()
            if call.active():
                call.cancel()
            return result

        d.addBoth(_cleanup)
        return d

    def _timeout(self, d: defer.Deferred[bool]) -> None:
        if self._deferred is d:
            self._deferred = None
        if not d.called:
            d.callback(False)

    def close(self) -> None:
        self.notifier._remove(self)
        d, self._deferred = self._deferred, None
        if d is not None and not d.called:
            d.callback(False)


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._by_room: dict[str, set[Listener]] = {}
        self._by_user: dict[str, set[Listener]] = {}
        # Called with every batch of event rows before listeners are woken (caches that the
        # events stream invalidates, e.g. /sync's membership cache).
        self._row_observers: list[Callable[[Sequence[StreamRow]], None]] = []

    def add_row_observer(self, observer: Callable[[Sequence[StreamRow]], None]) -> None:
        self._row_observers.append(observer)

    def listen(self, user_id: str, room_ids: Iterable[str]) -> Listener:
        listener = Listener(self, user_id, frozenset(room_ids))
        self._by_user.setdefault(user_id, set()).add(listener)
        for room_id in listener.room_ids:
            self._by_room.setdefault(room_id, set()).add(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        users = self._by_user.get(listener.user_id)
        if users is not None:
            users.discard(listener)
            if not users:
                del self._by_user[listener.user_id]
        for room_id in listener.room_ids:
            listeners = self._by_room.get(room_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_room[room_id]

    def listener_count(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    def on_new_events(self, rows: Iterable[StreamRow]) -> None:
        """Observes and wakes at once: for callers whose position already covers the rows."""
        batch = list(rows)
        self.observe_rows(batch)
        self.wake_for_rows(batch)

    def observe_rows(self, rows: Sequence[StreamRow]) -> None:
        """Hands new event rows to the row observers; wakes nobody (see `wake_for_rows`)."""
        for observer in self._row_observers:
            observer(rows)

    def wake_for_rows(self, rows: Iterable[StreamRow]) -> None:
        """Wakes the listeners of the rows' rooms, and of the users whose membership they
        change. Call only once the events position covers every row."""
        woken: set[Listener] = set()
        for row in rows:
            woken.update(self._by_room.get(row.room_id, ()))
            if row.type == "m.room.member" and row.state_key:
                woken.update(self._by_user.get(row.state_key, ()))
        self._fire_all(woken)

    def wake(self, wakeups: Wakeups) -> None:
        """Wakes the listeners of the users and rooms named (non-event streams)."""
        woken: set[Listener] = set()
        for user_id in wakeups.users:
            woken.update(self._by_user.get(user_id, ()))
        for room_id in wakeups.rooms:
            woken.update(self._by_room.get(room_id, ()))
        self._fire_all(woken)

    def wake_room(self, room_id: str) -> None:
        """Something room-scoped but not an event changed (typing, receipts)."""
        self._fire_all(set(self._by_room.get(room_id, ())))

    def wake_user(self, user_id: str) -> None:
        self._fire_all(set(self._by_user.get(user_id, ())))

    def _fire_all(self, woken: set[Listener]) -> None:
        # All are removed before any fires: a woken request may listen again at once.
        for listener in woken:
            self._remove(listener)
        for listener in woken:
            listener._fire()
