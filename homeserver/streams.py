"""The replication streams this code knows, and how a process follows each one.

A stream has exactly one writer process (configured by `stream_writers`). Its writer
allocates positions; every other process follows it: on learning a newer position it
calls `apply_rows(ctx, after, up_to)`, which reads what changed in (after, up_to] into
this process's view and returns the position it reached with the wake-ups it owes; the
follower runs those only after moving the stream's position (replication/follower.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from homeserver.context import HomeServerContext
from homeserver.handlers import (
    account_data,
    device_lists,
    presence,
    receipts,
    to_device,
    typing,
)
from replication.follower import AppliedRows


@attrs.frozen(slots=True)
class StreamDefinition:
    name: str
    # On the writer at start: the newest position already stored.
    max_position: Callable[[HomeServerContext], Awaitable[int]]
    # On followers: apply the rows in (after, up_to]; return the position reached and
    # whom to wake once it is visible.
    apply_rows: Callable[[HomeServerContext, int, int], Awaitable[AppliedRows]]
    # On the writer, for streams whose rows are not in the database: the rows in
    # (after, up_to] as JSON, served at GET /_ganglion/replication/rows/<name>.
    rows: Callable[[HomeServerContext, int, int], Awaitable[list[dict[str, Any]]]] | None = None


_EVENT_BATCH = 1000


async def _events_max(ctx: HomeServerContext) -> int:
    return await ctx.event_store.get_max_stream_ordering()


async def _events_apply(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    rows = await ctx.event_store.get_stream_rows(after, up_to, limit=_EVENT_BATCH)
    ctx.notifier.observe_rows(rows)
    reached = up_to if len(rows) < _EVENT_BATCH else rows[-1].stream_ordering
    return AppliedRows(reached, functools.partial(ctx.notifier.wake_for_rows, rows))


STREAM_DEFINITIONS: dict[str, StreamDefinition] = {
    "events": StreamDefinition("events", _events_max, _events_apply),
    # Kept in its writer's memory; followers fetch the rows from the writer.
    "typing": StreamDefinition(
        "typing", typing.max_position, typing.apply_rows, rows=typing.serve_rows
    ),
    "receipts": StreamDefinition("receipts", receipts.max_position, receipts.apply_rows),
    "presence": StreamDefinition("presence", presence.max_position, presence.apply_rows),
    "account_data": StreamDefinition(
        "account_data", account_data.max_position, account_data.apply_rows
    ),
    "to_device": StreamDefinition("to_device", to_device.max_position, to_device.apply_rows),
    "device_lists": StreamDefinition(
        "device_lists", device_lists.max_position, device_lists.apply_rows
    ),
}
