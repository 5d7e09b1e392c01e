"""Long-polls on sync workers wake for every event: 20 users long-poll /sync through nginx
(spread over two sync workers) while one sender sends 200 messages, one at a time, each
only after every receiver has the previous one. A lone message must complete each waiting
long-poll on its own; a waiter woken before its worker could see the event would sleep
until the long-poll timeout instead, which the per-delivery bound catches."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomPreset,
    SyncResponse,
)

from tests.harness import metrics
from tests.harness.ganglion import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]

RECEIVERS = 20
MESSAGES = 200
LONG_POLL_MS = 30_000
# Far below the long-poll timeout: a missed wake-up costs the whole 30 s.
DELIVERY_BOUND_S = 5.0


class Receiver:
    """Long-polls /sync and records when each message body first arrives."""

    def __init__(self, client: AsyncClient, room_id: str, since: str) -> None:
        self.client = client
        self.room_id = room_id
        self.since = since
        self.arrived: dict[str, float] = {}
        self.errors: list[Any] = []
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            resp = await self.client.sync(
                timeout=LONG_POLL_MS,
                since=self.since,
                sync_filter={"room": {"timeline": {"limit": 50}}, "presence": {"types": []}},
            )
            now = time.monotonic()
            if not isinstance(resp, SyncResponse):
                self.errors.append(resp)
                continue
            self.since = resp.next_batch
            room = resp.rooms.join.get(self.room_id)
            if room is None:
                continue
            async with self.changed:
                for event in room.timeline.events:
                    body = getattr(event, "body", None)
                    if body is not None:
                        self.arrived.setdefault(body, now)
                self.changed.notify_all()

    async def wait_for(self, body: str, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: body in self.arrived), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"{self.client.user_id} did not get {body!r} within {timeout} s "
                    f"(errors: {self.errors[-3:]})"
                ) from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def _register(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    resp = await client.register(name, "a long enough password")
    assert isinstance(resp, RegisterResponse), resp
    return client


async def _fanout(dep: Deployment) -> list[float]:
    base = dep.proxy_url
    suffix = uuid.uuid4().hex[:8]
    sender = await _register(base, f"sender{suffix}")
    users = [await _register(base, f"r{i}x{suffix}") for i in range(RECEIVERS)]
    receivers: list[Receiver] = []
    try:
        created = await sender.room_create(name="fanout", preset=RoomPreset.public_chat)
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        for user in users:
            joined = await user.join(room_id)
            assert isinstance(joined, JoinResponse), joined
        for user in users:
            first = await user.sync(timeout=0)
            assert isinstance(first, SyncResponse), first
            receiver = Receiver(user, room_id, first.next_batch)
            receivers.append(receiver)
            receiver.start()

        latencies: list[float] = []
        for i in range(MESSAGES):
            body = f"fanout {i}"
            sent = await sender.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": body}
            )
            returned = time.monotonic()
            assert getattr(sent, "event_id", None), sent
            await asyncio.gather(*(r.wait_for(body, DELIVERY_BOUND_S) for r in receivers))
            latencies.extend(r.arrived[body] - returned for r in receivers)
        for receiver in receivers:
            assert receiver.errors == [], receiver.errors[:3]
        return latencies
    finally:
        for receiver in receivers:
            await receiver.stop()
        for client in (sender, *users):
            await client.close()


def test_every_long_poll_wakes_for_a_lone_message(deployment: Deployment) -> None:
    latencies = asyncio.run(_fanout(deployment))
    assert len(latencies) == RECEIVERS * MESSAGES
    # Delivery can beat the sender's own response; what matters is that none is late.
    assert max(latencies) < DELIVERY_BOUND_S
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"fanout deliveries: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    # The receivers were spread over both sync workers.
    served = [
        metrics.scrape(deployment.url_of(name, "metrics_listen")).first(
            "ganglion_http_requests_total", endpoint="/_matrix/client/v3/sync", status="200"
        )
        or 0
        for name in ("sync1", "sync2")
    ]
    assert all(n > 0 for n in served), served
