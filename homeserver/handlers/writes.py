"""Write operations of the client API, performed on the writer of their stream.

HTTP resources call `ctx.writes.call(name, args)` on every process. A process that writes
the operation's stream runs it; any other forwards it over the replication HTTP API to
that stream's writer, and answers its client only once its own view has reached the
positions the write produced (read-your-writes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from replication.follower import StreamFollower
from replication.http import ReplicationClient

logger = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Writes(Protocol):
    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]: ...


class WriteDispatcher:
    def __init__(
        self,
        local: Mapping[str, Operation],
        op_streams: Mapping[str, str],
        clients: Mapping[str, ReplicationClient],
        followers: Mapping[str, StreamFollower],
        wait_timeout_s: float,
    ) -> None:
        self.local = local
        self.op_streams = op_streams
        self.clients = clients
        self.followers = followers
        self.wait_timeout_s = wait_timeout_s

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        op = self.local.get(name)
        if op is not None:
            return await op(args)
        stream = self.op_streams[name]
        result, positions = await self.clients[stream].call(name, args)
        for pos_stream, pos in positions.items():
            follower = self.followers.get(pos_stream)
            if follower is None:
                continue
            tracker = follower.tracker
            tracker.saw_writer_position(pos)
            # Don't rely on Redis delivering the position: read up to it now.
            follower.request_catch_up(pos)
            if not await tracker.wait_for(pos, self.wait_timeout_s):
                logger.warning(
                    "replication did not catch up in time after a forwarded write",
                    extra={"stream": pos_stream, "want": pos, "have": tracker.position},
                )
        return result
