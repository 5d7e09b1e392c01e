"""End-to-end encryption as a real client does it: matrix-nio with its e2e support (vodozemac)
against one Ganglion process (SQLite).

Two nio clients upload their device and one-time keys; alice queries bob's keys and claims
one of his one-time keys; in a room with `m.room.encryption` state, her `room_send` shares a
megolm session with bob's device over an olm-encrypted to-device message and sends the
message encrypted; bob's client decrypts it from /sync. Every step of the key path (upload,
query, claim, to-device delivery, one-time key counts, device list tracking) is the server's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.harness.ganglion import Deployment, make_deployment_config
from tests.harness.metrics import scrape
from tests.harness.ports import free_port
from tests.harness.redis import RedisServer
from tests.harness.single import SingleServer, single_server

pytestmark = [pytest.mark.e2e]

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("e2ee")) as srv:
        yield srv


async def _client(base_url: str, name: str, store: Path) -> AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = AsyncClient(base_url, name, store_path=str(store), config=config)
    registered = await client.register(name, PASSWORD)
    assert isinstance(registered, RegisterResponse), registered
    assert client.olm is not None, "nio's e2e support is missing"
    uploaded = await client.keys_upload()
    assert isinstance(uploaded, KeysUploadResponse), uploaded
    assert uploaded.signed_curve25519_count > 0
    return client


async def _sync(client: AsyncClient) -> SyncResponse:
    resp = await client.sync(timeout=0, full_state=client.next_batch is None)
    assert isinstance(resp, SyncResponse), resp
    return resp


async def _scenario(base_url: str, store: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice = await _client(base_url, f"alice{suffix}", store / "alice")
    bob = await _client(base_url, f"bob{suffix}", store / "bob")
    try:
        created = await alice.room_create(
            name="secret",
            invite=[bob.user_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        await _sync(bob)
        first = await _sync(alice)
        assert room_id in first.rooms.join
        assert alice.rooms[room_id].encrypted

        # The server counts bob's one-time keys for his device.
        bob_sync = await _sync(bob)
        assert bob_sync.device_key_count.signed_curve25519 > 0
        counted_before = bob_sync.device_key_count.signed_curve25519

        # alice learns bob's device from /keys/query and claims one of his one-time keys.
        assert alice.should_query_keys
        queried = await alice.keys_query()
        assert isinstance(queried, KeysQueryResponse), queried
        assert bob.device_id in queried.device_keys[bob.user_id]
        assert bob.device_id in alice.device_store[bob.user_id]
        to_claim = alice.get_missing_sessions(room_id)
        assert to_claim == {bob.user_id: [bob.device_id]}
        claimed = await alice.keys_claim(to_claim)
        assert isinstance(claimed, KeysClaimResponse), claimed
        assert bob.device_id in claimed.one_time_keys[bob.user_id]

        # Encrypted send: the megolm session goes to bob's device over olm (to-device).
        sent = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "the eagle flies at midnight"},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, RoomSendResponse), sent

        decrypted: RoomMessageText | None = None
        undecrypted = 0
        counted_after = counted_before
        deadline = time.monotonic() + 30
        while decrypted is None and time.monotonic() < deadline:
            resp = await bob.sync(timeout=5_000)
            assert isinstance(resp, SyncResponse), resp
            counted_after = resp.device_key_count.signed_curve25519 or 0
            room = resp.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                if isinstance(event, RoomMessageText) and event.event_id == sent.event_id:
                    decrypted = event
                elif isinstance(event, MegolmEvent):
                    undecrypted += 1
        assert decrypted is not None, f"no decrypted message ({undecrypted} undecrypted)"
        assert decrypted.body == "the eagle flies at midnight"
        assert decrypted.decrypted and decrypted.sender == alice.user_id
        assert undecrypted == 0
        # alice's claim took one of bob's one-time keys (bob's client uploaded none since).
        assert counted_after == counted_before - 1
    finally:
        await alice.close()
        await bob.close()


def test_two_nio_clients_exchange_an_encrypted_message(
    server: SingleServer, tmp_path: Path
) -> None:
    asyncio.run(_scenario(server.base_url, tmp_path))


WRITER = "writer1"


def _writer_config(tmp: Path, pg_dsn: str, redis_port: int) -> Path:
    """The scaled deployment with a stream_writer worker writing `device_lists`."""
    path = make_deployment_config(tmp, pg_dsn, redis_port)
    config = yaml.safe_load(path.read_text())
    config["workers"] = {
        WRITER: {
            "type": "stream_writer",
            "listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "replication_listen": f"127.0.0.1:{free_port()}",
        },
        **config["workers"],
    }
    config["stream_writers"] = {**config.get("stream_writers", {}), "device_lists": WRITER}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.nginx
def test_encrypted_message_through_nginx_with_device_lists_on_a_stream_writer(
    pg_dsn: str, redis_server: RedisServer, tmp_path: Path, deployment_factory: Any
) -> None:
    dep: Deployment = deployment_factory(
        _writer_config(tmp_path / "config", pg_dsn, redis_server.port)
    )
    asyncio.run(_scenario(dep.proxy_url, tmp_path / "stores"))
    requests = "ganglion_http_requests_total"
    writer = scrape(dep.url_of(WRITER, "metrics_listen"))
    # nginx sent the uploads and the claims to the device_lists writer.
    for endpoint in ("/_matrix/client/v3/keys/upload", "/_matrix/client/v3/keys/claim"):
        assert writer.total(requests, endpoint=endpoint, status="200") >= 1, endpoint
        main = scrape(dep.url_of("main", "metrics_listen"))
        assert main.total(requests, endpoint=endpoint) == 0, endpoint
    position = writer.total(
        "ganglion_replication_stream_position", stream="device_lists", writer=WRITER
    )
    assert position > 0
