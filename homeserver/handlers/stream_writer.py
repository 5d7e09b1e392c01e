"""Writing a non-event stream on its writer: allocate a position, store, announce.

The same contract as the events persister: readers see position P only once every write
at or below P has finished, and whoever waits on the new data is woken at that moment
(here, through the `on_visible` callback of each write).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from replication.streams import StreamIdGenerator, StreamPositionTracker

logger = logging.getLogger(__name__)

R = TypeVar("R")

# ctx.extras keys set by workers/app.py on every process (for the streams it writes).
ID_GENERATORS_KEY = "id_generators"
PUBLISH_POSITION_KEY = "publish_position"
_WRITERS_KEY = "stream_writers"


class StreamWriter:
    def __init__(
        self,
        stream: str,
        id_gen: StreamIdGenerator,
        tracker: StreamPositionTracker,
        publish_position: Callable[[int], None],
    ) -> None:
        self.stream = stream
        self.id_gen = id_gen
        self.tracker = tracker
        self.publish_position = publish_position
        self._on_visible: dict[int, Callable[[], None]] = {}

    async def write(
        self,
        store: Callable[[int], Awaitable[R]],
        on_visible: Callable[[], None] | None = None,
    ) -> tuple[R, int]:
        """Runs `store(position)`; returns its result and the position once it is visible."""
        pos = self.id_gen.allocate()
        ok = False
        try:
            result = await store(pos)
            ok = True
        finally:
            if ok and on_visible is not None:
                self._on_visible[pos] = on_visible
            if self.id_gen.finish(pos):
                self._announce(self.id_gen.current)
        if self.tracker.position < pos:
            # A lower position is still being written: nobody may see ours before it.
            await self.tracker.wait_for(pos, 3600)
        return result, pos

    def _announce(self, current: int) -> None:
        self.tracker.advance(current)
        for pos in sorted(p for p in self._on_visible if p <= current):
            callback = self._on_visible.pop(pos)
            try:
                callback()
            except Exception:
                logger.exception("wake-up after a write failed", extra={"stream": self.stream})
        self.publish_position(current)


def get_stream_writer(ctx: Any, stream: str) -> StreamWriter:
    """This process's writer of `stream` (it must be the stream's configured writer)."""
    writers: dict[str, StreamWriter] = ctx.extras.setdefault(_WRITERS_KEY, {})
    writer = writers.get(stream)
    if writer is None:
        id_gen = ctx.extras[ID_GENERATORS_KEY][stream]
        publish = ctx.extras[PUBLISH_POSITION_KEY]
        writer = StreamWriter(
            stream, id_gen, ctx.trackers[stream], lambda pos: publish(stream, pos)
        )
        writers[stream] = writer
    return writer
