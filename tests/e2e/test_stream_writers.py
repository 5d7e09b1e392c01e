"""Moving stream writers off main by config alone.

The deployment of the scaled test (PostgreSQL, a private Redis, main, two sync workers,
nginx) plus one `stream_writer` worker, `writer1`, named in `stream_writers` as the writer
of typing, receipts and to_device. matrix-nio clients, through nginx, see each other's
typing and receipts and receive to-device messages; the writes landed on writer1 (nginx
routes them there), a write sent to another process is forwarded to writer1, and every
process follows writer1's streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from nio import (
    AsyncClient,
    JoinResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    TypingNoticeEvent,
    UpdateReceiptMarkerResponse,
)

from tests.harness import metrics
from tests.harness.ganglion import Deployment, make_deployment_config
from tests.harness.matrix import quote, request
from tests.harness.metrics import Metrics
from tests.harness.ports import free_port
from tests.harness.redis import RedisServer
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]

WRITER = "writer1"
MOVED = ("typing", "receipts", "to_device")
PROCESSES = ("main", WRITER, "sync1", "sync2")


def _config(tmp: Path, pg_dsn: str, redis_port: int) -> Path:
    path = make_deployment_config(tmp, pg_dsn, redis_port)
    config = yaml.safe_load(path.read_text())
    workers = config["workers"]
    # First among the workers, so that the sync workers find their writer up at start.
    config["workers"] = {
        WRITER: {
            "type": "stream_writer",
            "listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "replication_listen": f"127.0.0.1:{free_port()}",
        },
        **workers,
    }
    config["stream_writers"] = {**config.get("stream_writers", {}), **dict.fromkeys(MOVED, WRITER)}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def scrape(dep: Deployment, name: str) -> Metrics:
    return metrics.scrape(dep.url_of(name, "metrics_listen"))


async def _register(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    resp = await client.register(name, "a long enough password")
    assert isinstance(resp, RegisterResponse), resp
    return client


async def sync_until(
    client: AsyncClient, since: str, found: Callable[[SyncResponse], bool], timeout: float = 60
) -> tuple[SyncResponse, str]:
    """Long-polls from `since` until a response satisfies `found`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=10_000, since=since)
        assert isinstance(resp, SyncResponse), resp
        since = resp.next_batch
        if found(resp):
            return resp, since
    raise AssertionError("no /sync response with the expected data in time")


def _typing(resp: SyncResponse, room_id: str) -> list[list[str]]:
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.users for e in room.ephemeral if isinstance(e, TypingNoticeEvent)]


def _receipts(resp: SyncResponse, room_id: str) -> list[Any]:
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [r for e in room.ephemeral if isinstance(e, ReceiptEvent) for r in e.receipts]


async def _scenario(dep: Deployment) -> None:
    base = dep.proxy_url
    suffix = uuid.uuid4().hex[:8]
    alice = await _register(base, f"alice{suffix}")
    bob = await _register(base, f"bob{suffix}")
    try:
        created = await alice.room_create(name="writers", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        a_first = await alice.sync(timeout=0)
        b_first = await bob.sync(timeout=0)
        assert isinstance(a_first, SyncResponse) and isinstance(b_first, SyncResponse)
        a_since, b_since = a_first.next_batch, b_first.next_batch

        # Typing: written on writer1, seen by bob through a sync worker.
        typed = await alice.room_typing(room_id, True, timeout=30_000)
        assert isinstance(typed, RoomTypingResponse), typed
        _, b_since = await sync_until(
            bob, b_since, lambda r: [alice.user_id] in _typing(r, room_id)
        )

        # Receipts: bob reads alice's message (threaded "main" by nio, then unthreaded with
        # the read marker); alice sees both.
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert isinstance(sent, RoomSendResponse), sent
        marked = await bob.update_receipt_marker(room_id, sent.event_id)
        assert isinstance(marked, UpdateReceiptMarkerResponse), marked
        markers = await bob.room_read_markers(room_id, sent.event_id, sent.event_id)
        assert isinstance(markers, RoomReadMarkersResponse), markers

        seen: list[Any] = []

        def both_receipts(r: SyncResponse) -> bool:
            mine = [x for x in _receipts(r, room_id) if x.user_id == bob.user_id]
            seen.extend(x for x in mine if x.event_id == sent.event_id)
            return {x.thread_id for x in seen} >= {"main", None}

        _, a_since = await sync_until(alice, a_since, both_receipts)
        assert {getattr(x.receipt_type, "value", x.receipt_type) for x in seen} == {"m.read"}

        # To-device: queued on writer1, delivered to bob's device.
        message = ToDeviceMessage("org.example.e2e", bob.user_id, bob.device_id, {"n": 1})
        delivered = await alice.to_device(message, tx_id="e2e-1")
        assert isinstance(delivered, ToDeviceResponse), delivered

        def got_message(r: SyncResponse) -> bool:
            return any(
                getattr(e, "source", {}).get("content") == {"n": 1} for e in r.to_device_events
            )

        _, b_since = await sync_until(bob, b_since, got_message)

        # A write sent straight to main (not through nginx) is forwarded to writer1.
        status, body = request(
            "PUT",
            f"{dep.url_of('main')}/_matrix/client/v3/rooms/{quote(room_id)}/typing/"
            f"{quote(alice.user_id)}",
            {"typing": False},
            access_token=alice.access_token,
        )
        assert status == 200, body
        await sync_until(bob, b_since, lambda r: [] in _typing(r, room_id))
    finally:
        await alice.close()
        await bob.close()


def test_typing_receipts_and_to_device_on_a_stream_writer_worker(
    pg_dsn: str, redis_server: RedisServer, tmp_path: Path, deployment_factory: Any
) -> None:
    dep: Deployment = deployment_factory(_config(tmp_path / "config", pg_dsn, redis_server.port))
    asyncio.run(_scenario(dep))

    scraped = {name: scrape(dep, name) for name in PROCESSES}
    requests = "ganglion_http_requests_total"
    typing_endpoint = "/_matrix/client/v3/rooms/{roomId}/typing/{userId}"
    receipt_endpoint = "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}"
    to_device_endpoint = "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}"
    # nginx sent the writes to writer1; only the one sent to main directly went elsewhere.
    assert scraped[WRITER].total(requests, endpoint=typing_endpoint, status="200") == 1
    assert scraped["main"].total(requests, endpoint=typing_endpoint, status="200") == 1
    assert scraped[WRITER].total(requests, endpoint=receipt_endpoint, status="200") == 1
    assert scraped[WRITER].total(requests, endpoint=to_device_endpoint, status="200") == 1
    for name in ("main", "sync1", "sync2"):
        assert scraped[name].total(requests, endpoint=receipt_endpoint) == 0
        assert scraped[name].total(requests, endpoint=to_device_endpoint) == 0
    # Every other process follows writer1's streams, up to its position.
    for stream in MOVED:
        want = scraped[WRITER].total(
            "ganglion_replication_stream_position", stream=stream, writer=WRITER
        )
        assert want > 0, stream
        for name in ("main", "sync1", "sync2"):
            _wait_for_position(dep, name, stream, want)


def _wait_for_position(dep: Deployment, name: str, stream: str, want: float) -> None:
    def reached() -> bool:
        position = scrape(dep, name).total(
            "ganglion_replication_stream_position", stream=stream, writer=WRITER
        )
        return position >= want

    wait_until(reached, timeout=30, description=f"{name} follows {stream} on {WRITER}")
