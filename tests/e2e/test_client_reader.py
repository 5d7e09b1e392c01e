"""client_reader workers through nginx: PostgreSQL, Redis, main, one sync worker, two client
readers. Room reads are answered by the readers (their metrics count them), with the same
visibility rules as on main, and /messages of one room always reaches the same reader."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import metrics
from tests.harness.ganglion import Deployment, make_deployment_config
from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.redis import RedisServer
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]

READERS = ("reader1", "reader2")


def served(dep: Deployment, name: str, endpoint: str, method: str = "GET") -> float:
    """How many requests `name` answered for `endpoint` (any status)."""
    found = metrics.scrape(dep.url_of(name, "metrics_listen"))
    return found.total("ganglion_http_requests_total", endpoint=endpoint, method=method)


def counts(dep: Deployment, endpoint: str) -> dict[str, float]:
    return {name: served(dep, name, endpoint) for name in ("main", *READERS)}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.fixture
def dep(
    pg_dsn: str,
    redis_server: RedisServer,
    tmp_path: Path,
    deployment_factory: Callable[..., Deployment],
) -> Deployment:
    config = make_deployment_config(
        tmp_path / "config",
        pg_dsn,
        redis_server.port,
        sync_workers=1,
        extra_args=("--client-readers", "2"),
    )
    deployment = deployment_factory(config)
    assert set(READERS) <= set(deployment.processes)
    return deployment


def test_room_reads_are_served_by_client_readers(dep: Deployment) -> None:
    alice, bob, eve = (MatrixClient(dep.proxy_url) for _ in range(3))
    for client in (alice, bob, eve):
        ok(client.register(f"u{uuid.uuid4().hex[:10]}"))
    room = ok(alice.create_room(preset="public_chat", name="Readers"))["room_id"]
    ok(bob.join(room))
    event_id = ok(alice.send_text(room, "hello readers"))["event_id"]
    r = f"rooms/{quote(room)}"

    # A reader may lag the writer by a moment: wait for it to see the event.
    event_name = "/_matrix/client/v3/rooms/{roomId}/event/{eventId}"
    before = counts(dep, event_name)
    wait_until(
        lambda: bob.call("GET", f"{r}/event/{quote(event_id)}")[0] == 200,
        30,
        0.05,
        description="the event to be readable through nginx",
    )
    moved = delta(before, counts(dep, event_name))
    assert moved and set(moved) <= set(READERS), moved
    assert ok(bob.call("GET", f"{r}/event/{quote(event_id)}"))["content"]["body"] == "hello readers"
    status, body = eve.call("GET", f"{r}/event/{quote(event_id)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")

    checks: list[tuple[str, str, dict[str, Any], Callable[[Any], bool]]] = [
        (
            "/_matrix/client/v3/rooms/{roomId}/members",
            f"{r}/members",
            {},
            lambda b: {e["state_key"] for e in b["chunk"]} == {alice.user_id, bob.user_id},
        ),
        (
            "/_matrix/client/v3/rooms/{roomId}/context/{eventId}",
            f"{r}/context/{quote(event_id)}",
            {"limit": 4},
            lambda b: b["event"]["event_id"] == event_id,
        ),
        (
            "/_matrix/client/v3/rooms/{roomId}/state",
            f"{r}/state",
            {},
            lambda b: ("m.room.name", "") in {(e["type"], e["state_key"]) for e in b},
        ),
        (
            "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
            f"{r}/state/m.room.name/",
            {},
            lambda b: b == {"name": "Readers"},
        ),
        (
            "/_matrix/client/v3/rooms/{roomId}/joined_members",
            f"{r}/joined_members",
            {},
            lambda b: set(b["joined"]) == {alice.user_id, bob.user_id},
        ),
        (
            "/_matrix/client/v3/joined_rooms",
            "joined_rooms",
            {},
            lambda b: room in b["joined_rooms"],
        ),
    ]
    for endpoint, path, params, check in checks:
        before = counts(dep, endpoint)
        body = ok(bob.call("GET", path, params=params))
        assert check(body), (path, body)
        moved = delta(before, counts(dep, endpoint))
        assert sum(moved.values()) == 1 and set(moved) <= set(READERS), (endpoint, moved)
    # Non-members are refused by the reader just as by main.
    status, body = eve.call("GET", f"{r}/state")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # A write sent to a reader's route is forwarded to the writer.
    ok(alice.call("PUT", f"{r}/state/m.room.topic/", {"topic": "via a reader"}))
    assert ok(alice.call("GET", f"{r}/state/m.room.topic/")) == {"topic": "via a reader"}


def test_messages_are_sticky_per_room(dep: Deployment) -> None:
    alice = MatrixClient(dep.proxy_url)
    ok(alice.register(f"u{uuid.uuid4().hex[:10]}"))
    rooms = [ok(alice.create_room())["room_id"] for _ in range(8)]
    endpoint = "/_matrix/client/v3/rooms/{roomId}/messages"
    used: dict[str, str] = {}
    for room in rooms:
        before = counts(dep, endpoint)
        for _ in range(4):
            ok(alice.call("GET", f"rooms/{quote(room)}/messages", params={"dir": "b", "limit": 5}))
        moved = delta(before, counts(dep, endpoint))
        # All four requests of a room went to one reader.
        assert list(moved.values()) == [4.0] and set(moved) <= set(READERS), moved
        used[room] = next(iter(moved))
    # Consistent hashing spreads eight rooms over both readers (fails with odds ~1/128).
    assert set(used.values()) == set(READERS), used
