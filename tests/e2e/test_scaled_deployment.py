"""The scaled deployment end to end: PostgreSQL, a private Redis, main, two sync workers and
nginx as real processes, driven through nginx by matrix-nio as users' clients drive it."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
)

from tests.harness import metrics
from tests.harness.ganglion import Deployment
from tests.harness.matrix import quote, request
from tests.harness.metrics import Metrics
from tests.harness.redis import RedisServer
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]

SYNC_WORKERS = ("sync1", "sync2")
PROCESSES = ("main", *SYNC_WORKERS)


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    return request(method, base + path, body, access_token=token)


def scrape(dep: Deployment, name: str) -> Metrics:
    return metrics.scrape(dep.url_of(name, "metrics_listen"))


def wait_for_workers_redis(dep: Deployment, *, connected: bool, description: str) -> None:
    """Until every sync worker reports being (dis)connected from Redis."""

    def reports(name: str) -> bool:
        value = scrape(dep, name).first("ganglion_replication_redis_connected")
        return value == float(connected)

    for name in SYNC_WORKERS:
        wait_until(
            functools.partial(reports, name), timeout=30, description=f"{name} {description}"
        )


class Receiver:
    """A client that long-polls /sync and records the message bodies it sees, in order."""

    def __init__(self, client: AsyncClient, room_id: str, since: str) -> None:
        self.client = client
        self.room_id = room_id
        self.since = since
        self.bodies: list[str] = []
        self.syncs = 0
        self._task: asyncio.Task[None] | None = None
        self.errors: list[Any] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            resp = await self.client.sync(
                timeout=30_000, since=self.since, sync_filter={"room": {"timeline": {"limit": 100}}}
            )
            self.syncs += 1
            if not isinstance(resp, SyncResponse):
                self.errors.append(resp)
                await asyncio.sleep(0.1)
                continue
            self.since = resp.next_batch
            room = resp.rooms.join.get(self.room_id)
            if room is not None:
                # With a limit above the burst size, no gap may appear.
                assert not room.timeline.limited
                for event in room.timeline.events:
                    body = getattr(event, "body", None)
                    if body is not None:
                        self.bodies.append(body)

    async def wait_for_count(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"received {len(self.bodies)} of {n} messages; errors: {self.errors[-3:]}"
                )
            await asyncio.sleep(0.02)

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
    assert resp.access_token.startswith("gan_")
    return client


async def _scenario(dep: Deployment, redis: RedisServer) -> None:
    base = dep.proxy_url
    suffix = uuid.uuid4().hex[:8]
    alice = await _register(base, f"alice{suffix}")
    bob = await _register(base, f"bob{suffix}")
    try:
        created = await alice.room_create(name="e2e", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        # Bob sees the invite through a sync worker, then joins.
        first = await bob.sync(timeout=30_000)
        assert isinstance(first, SyncResponse), first
        if room_id not in first.rooms.invite:
            first = await bob.sync(timeout=30_000, since=first.next_batch)
        assert room_id in first.rooms.invite
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        # Alice's own sends are visible in her next /sync.
        a_sync = await alice.sync(timeout=0)
        assert isinstance(a_sync, SyncResponse)
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "mine"}
        )
        assert isinstance(sent, RoomSendResponse), sent
        a_next = await alice.sync(timeout=30_000, since=a_sync.next_batch)
        assert isinstance(a_next, SyncResponse)
        own = [e.event_id for e in a_next.rooms.join[room_id].timeline.events]
        assert sent.event_id in own

        after_join = await bob.sync(timeout=0, since=first.next_batch)
        assert isinstance(after_join, SyncResponse)
        receiver = Receiver(bob, room_id, after_join.next_batch)
        receiver.start()
        try:
            expected = [f"message {i}" for i in range(50)]

            async def send(i: int) -> None:
                resp = await alice.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": expected[i]}
                )
                assert isinstance(resp, RoomSendResponse), resp

            for i in range(0, 20):
                await send(i)
            await receiver.wait_for_count(20)

            # Redis goes away mid-run: the workers keep serving, catching up over HTTP + DB.
            redis.stop()
            wait_for_workers_redis(dep, connected=False, description="notices Redis is gone")
            for i in range(20, 35):
                await send(i)
            await receiver.wait_for_count(35)

            # Redis returns: the workers resubscribe, and pushes flow again.
            redis.start()
            wait_for_workers_redis(dep, connected=True, description="resubscribes to Redis")
            for i in range(35, 50):
                await send(i)
            await receiver.wait_for_count(50)
            assert receiver.bodies == expected
        finally:
            await receiver.stop()
    finally:
        await alice.close()
        await bob.close()


def test_chat_through_nginx_with_sync_workers(
    deployment: Deployment, redis_server: RedisServer
) -> None:
    asyncio.run(_scenario(deployment, redis_server))

    # /sync was served by the sync workers only, and every process exposes its series.
    scraped = {name: scrape(deployment, name) for name in PROCESSES}
    sync_endpoint = "/_matrix/client/v3/sync"
    served = {
        name: scraped[name].first(
            "ganglion_http_requests_total", endpoint=sync_endpoint, status="200"
        )
        or 0
        for name in PROCESSES
    }
    assert served["main"] == 0, served
    assert served["sync1"] + served["sync2"] >= 10, served
    for name in PROCESSES:
        found = scraped[name]
        for metric in (
            "ganglion_http_request_duration_seconds_bucket",
            "ganglion_http_requests_total",
            "ganglion_db_transactions_total",
            "ganglion_db_transaction_duration_seconds_count",
            "ganglion_replication_stream_position",
            "ganglion_replication_stream_lag",
            "ganglion_reactor_tick_seconds_count",
        ):
            assert found.first(metric, worker=name) is not None, f"{metric} missing on {name}"
        position = found.first("ganglion_replication_stream_position", stream="events", worker=name)
        assert position is not None and position >= 50
        assert found.first("ganglion_replication_stream_lag", stream="events", worker=name) == 0.0
    # Every series carries the worker's name.
    for name in PROCESSES:
        for series in scraped[name].samples:
            assert series.labels.get("worker") == name, series


def test_write_to_a_worker_is_forwarded_and_read_back(deployment: Deployment) -> None:
    """A worker that receives a write forwards it to main, and answers only once its own
    view has caught up: the same worker's very next /sync (no long-poll) shows it."""
    worker = deployment.url_of("sync1")
    name = "carol" + uuid.uuid4().hex[:8]
    status, body = call(
        worker, "POST", "/_matrix/client/v3/register",
        {"username": name, "password": "another password", "auth": {"type": "m.login.dummy"}},
    )  # fmt: skip
    assert status == 200, body
    token = body["access_token"]
    status, body = call(worker, "POST", "/_matrix/client/v3/createRoom", {}, token=token)
    assert status == 200, body
    room_id = body["room_id"]
    status, initial = call(worker, "GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    assert status == 200 and room_id in initial["rooms"]["join"], initial
    for i in range(5):
        status, body = call(
            worker, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t{i}",
            {"msgtype": "m.text", "body": f"direct {i}"}, token=token,
        )  # fmt: skip
        assert status == 200, body
        event_id = body["event_id"]
        status, synced = call(
            worker,
            "GET",
            f"/_matrix/client/v3/sync?timeout=0&since={initial['next_batch']}",
            token=token,
        )
        assert status == 200, synced
        ids = [e["event_id"] for e in synced["rooms"]["join"][room_id]["timeline"]["events"]]
        assert event_id in ids
    # Idempotent per device: the same transaction ID gives the same event.
    status, again = call(
        worker, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t4",
        {"msgtype": "m.text", "body": "direct 4"}, token=token,
    )  # fmt: skip
    assert status == 200 and again["event_id"] == event_id
