"""Keeps a non-writer process's view of a stream up to date.

Pushed positions arrive over Redis. While Redis is away, and once each time it comes
back, the follower asks the writer for its positions over HTTP; either way it then reads
the rows it missed from the database by position, so nothing is lost or skipped.

Ordering is the point of this module: applying a batch first updates this process's view
(caches), then advances the stream's tracker, and only then wakes whoever waits on what
the batch brought. A waiter woken earlier would read the old position, find nothing new
and go back to sleep until the next batch or its timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import defer, task

from replication.streams import StreamPositionTracker
from replication.wire import PositionMessage

logger = logging.getLogger(__name__)


def _nothing_to_wake() -> None:
    return None


@attrs.frozen(slots=True)
class AppliedRows:
    """What applying the rows in (from, to] did: the position reached (below `to` when it
    reads in batches) and the wake-ups it owes, which the follower runs only once its
    tracker shows `reached`."""

    reached: int
    wake: Callable[[], None] = _nothing_to_wake


# Applies the rows in (from, to] to this process's view, without waking anyone.
ApplyRows = Callable[[int, int], Awaitable[AppliedRows]]
FetchPositions = Callable[[], Awaitable[dict[str, int]]]


class StreamFollower:
    def __init__(
        self,
        tracker: StreamPositionTracker,
        apply_rows: ApplyRows,
        fetch_positions: FetchPositions,
        clock: Any,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.tracker = tracker
        self.apply_rows = apply_rows
        self.fetch_positions = fetch_positions
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._target = tracker.position
        self._running = False
        self._poller: task.LoopingCall | None = None

    # -- inputs --------------------------------------------------------------------------

    def on_position(self, msg: PositionMessage) -> None:
        if msg.stream != self.tracker.stream or msg.writer != self.tracker.writer:
            return
        self.tracker.saw_writer_position(msg.position)
        self.request_catch_up(msg.position)

    def on_redis_connected(self) -> None:
        self._stop_polling()
        # Anything announced while we were away was lost: ask the writer once.
        defer.ensureDeferred(self.poll_once())

    def on_redis_disconnected(self) -> None:
        if self._poller is None:
            self._poller = task.LoopingCall(lambda: defer.ensureDeferred(self.poll_once()))
            self._poller.clock = self.clock
            self._poller.start(self.poll_interval_s, now=True)

    def _stop_polling(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None

    def stop(self) -> None:
        self._stop_polling()

    async def poll_once(self) -> None:
        try:
            positions = await self.fetch_positions()
        except Exception as e:
            logger.debug("position poll failed: %r", e)
            return
        pos = positions.get(self.tracker.stream)
        logger.debug(
            "polled writer positions", extra={"stream": self.tracker.stream, "writer_pos": pos}
        )
        if pos is not None:
            self.tracker.saw_writer_position(pos)
            self.request_catch_up(pos)

    # -- catching up -----------------------------------------------------------------------

    def request_catch_up(self, target: int) -> None:
        if target > self._target:
            self._target = target
        if not self._running:
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        self._running = True
        try:
            while self.tracker.position < self._target:
                start = self.tracker.position
                try:
                    applied = await self.apply_rows(start, self._target)
                except Exception:
                    logger.warning("catch-up failed; will retry", exc_info=True)
                    await task.deferLater(self.clock, self.poll_interval_s, lambda: None)
                    continue
                reached = applied.reached
                logger.debug(
                    "caught up", extra={"stream": self.tracker.stream, "from": start, "to": reached}
                )
                # Position first, then wake-ups: a woken reader must see what woke it.
                self.tracker.advance(reached)
                try:
                    applied.wake()
                except Exception:
                    logger.exception("wake-up after catch-up failed")
                if reached <= start:
                    # No progress (rows not visible yet): wait rather than spin the reactor.
                    await task.deferLater(self.clock, self.poll_interval_s, lambda: None)
        finally:
            self._running = False
