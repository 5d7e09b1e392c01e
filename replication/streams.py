"""Stream positions: allocation on the writer, tracking and waiting on readers."""

from __future__ import annotations

import heapq

from prometheus_client import Gauge
from twisted.internet import defer

from homeserver.clock import Clock

STREAM_POSITION = Gauge(
    "ganglion_replication_stream_position",
    "Position of each replication stream as processed by this process",
    ["stream", "writer"],
)
STREAM_WRITER_POSITION = Gauge(
    "ganglion_replication_stream_writer_position",
    "Newest position of each stream announced by its writer, as seen by this process",
    ["stream", "writer"],
)
STREAM_LAG = Gauge(
    "ganglion_replication_stream_lag",
    "How many positions this process trails the stream's writer",
    ["stream", "writer"],
)


class StreamIdGenerator:
    """Hands out positions on the writer; `current` only advances past finished ones.

    Several persists may run at once; readers must never see position N before every
    position below N is committed, so `current` is one below the oldest unfinished ID.
    """

    def __init__(self, current: int) -> None:
        self._next = current + 1
        self._current = current
        self._unfinished: list[int] = []
        self._finished: set[int] = set()

    @property
    def current(self) -> int:
        return self._current

    @property
    def next_position(self) -> int:
        """The position the next `allocate` hands out."""
        return self._next

    def allocate(self) -> int:
        pos = self._next
        self._next += 1
        heapq.heappush(self._unfinished, pos)
        return pos

    def finish(self, pos: int) -> bool:
        """Marks `pos` done (committed or abandoned); returns True if `current` advanced."""
        self._finished.add(pos)
        advanced = False
        while self._unfinished and self._unfinished[0] in self._finished:
            done = heapq.heappop(self._unfinished)
            self._finished.discard(done)
            self._current = done
            advanced = True
        return advanced


class StreamPositionTracker:
    """A process's view of one stream: the position it has processed, and waiters on it."""

    def __init__(self, stream: str, writer: str, clock: Clock, position: int = 0) -> None:
        self.stream = stream
        self.writer = writer
        self.clock = clock
        self.position = position
        self.writer_position = position
        self._waiters: list[tuple[int, int, defer.Deferred[bool]]] = []
        self._seq = 0
        self._update_metrics()

    def _update_metrics(self) -> None:
        STREAM_POSITION.labels(self.stream, self.writer).set(self.position)
        STREAM_WRITER_POSITION.labels(self.stream, self.writer).set(self.writer_position)
        STREAM_LAG.labels(self.stream, self.writer).set(
            max(0, self.writer_position - self.position)
        )

    def saw_writer_position(self, pos: int) -> None:
        if pos > self.writer_position:
            self.writer_position = pos
            self._update_metrics()

    def advance(self, pos: int) -> None:
        if pos <= self.position:
            return
        self.position = pos
        self.writer_position = max(self.writer_position, pos)
        self._update_metrics()
        while self._waiters and self._waiters[0][0] <= pos:
            _, _, d = heapq.heappop(self._waiters)
            if not d.called:
                d.callback(True)

    def wait_for(self, pos: int, timeout_s: float) -> defer.Deferred[bool]:
        """Fires True once position >= pos, or False when the timeout passes first."""
        if self.position >= pos:
            return defer.succeed(True)
        d: defer.Deferred[bool] = defer.Deferred()
        self._seq += 1
        heapq.heappush(self._waiters, (pos, self._seq, d))
        call = self.clock.callLater(timeout_s, _fire_false, d)

        def _cleanup(result: bool) -> bool:
            if call.active():
                call.cancel()
            return result

        d.addBoth(_cleanup)
        return d


def _fire_false(d: defer.Deferred[bool]) -> None:
    if not d.called:
        d.callback(False)
