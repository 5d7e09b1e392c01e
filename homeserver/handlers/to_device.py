"""Send-to-device messages, on the `to_device` stream.

A message waits in its device's queue until the device acknowledges it: a /sync whose
`since` carries a to_device position at or beyond the response that delivered it. A
response delivers at most `limits.max_to_device_per_sync` messages; when it had to stop
early it records how far it got, so that acknowledging its token drops only those.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homeserver.handlers.stream_writer import StreamWriter
from homeserver.notifier import Notifier, Wakeups
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from replication.follower import AppliedRows
from storage.stores.to_device import ToDeviceStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext

STREAM = "to_device"
ALL_DEVICES = "*"


class ToDeviceWriter:
    """Runs on the to_device stream's writer."""

    def __init__(
        self,
        server_name: str,
        store: ToDeviceStore,
        writer: StreamWriter,
        notifier: Notifier,
        clock_ms: Callable[[], int],
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.writer = writer
        self.notifier = notifier
        self.clock_ms = clock_ms

    async def send(
        self,
        sender: str,
        sender_device: str,
        txn_id: str,
        event_type: str,
        messages: dict[str, dict[str, dict[str, Any]]],
    ) -> None:
        """Queues the messages (user -> device or "*" -> content) for local devices.

        Remote users are skipped (no federation yet), as are unknown users and devices.
        """
        queued: list[tuple[str, str, dict[str, Any]]] = []
        for user_id, by_device in messages.items():
            if not user_id.endswith(":" + self.server_name):
                continue
            devices = await self.store.get_devices(user_id)
            if ALL_DEVICES in by_device:
                content = by_device[ALL_DEVICES]
                queued += [(user_id, d, content) for d in devices]
            else:
                known = set(devices)
                queued += [(user_id, d, c) for d, c in by_device.items() if d in known]
        recipients = {u for u, _, _ in queued}

        async def store(pos: int) -> None:
            await self.store.add_messages(
                pos, sender, sender_device, txn_id, event_type, queued, self.clock_ms()
            )

        def wake() -> None:
            for user_id in recipients:
                self.notifier.wake_user(user_id)

        # A repeated txn_id stores nothing and so wakes no one (the first send did).
        await self.writer.write(store, wake)


# -- the stream (see homeserver/streams.py) -----------------------------------------------


async def max_position(ctx: HomeServerContext) -> int:
    return await ToDeviceStore(ctx.db).get_max_stream_id()


async def apply_rows(ctx: HomeServerContext, after: int, up_to: int) -> AppliedRows:
    users = frozenset(await ToDeviceStore(ctx.db).get_changed_users(after, up_to))
    return AppliedRows(up_to, functools.partial(ctx.notifier.wake, Wakeups(users=users)))


# -- /sync ------------------------------------------------------------------------------


class ToDeviceSyncSource:
    stream = STREAM

    def __init__(self, ctx: HomeServerContext) -> None:
        self.ctx = ctx
        self.store = ToDeviceStore(ctx.db)
        self.limit = ctx.config.limits.max_to_device_per_sync

    async def current_position(self) -> int:
        return self.ctx.trackers[STREAM].position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        if req.since is not None:
            await self.store.acknowledge(req.user_id, req.device_id, req.since)
        pending = await self.store.get_pending(
            req.user_id, req.device_id, req.up_to, self.limit + 1
        )
        if not pending:
            return SyncContribution()
        if len(pending) > self.limit:
            pending = pending[: self.limit]
            await self.store.record_delivery(
                req.user_id, req.device_id, req.up_to, pending[-1].stream_id
            )
        else:
            await self.store.record_delivery(req.user_id, req.device_id, req.up_to, None)
        return SyncContribution(
            global_sections={"to_device": [m.to_event() for m in pending]}, has_data=True
        )
