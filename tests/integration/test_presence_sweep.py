"""The presence writer's sweep over HTTP: with nobody writing, a user who synced once goes
online -> unavailable (idle) -> offline (stopped syncing), and a long-polling room member
sees each step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.matrix import ok, quote
from tests.harness.single import SingleServer, single_server
from tests.harness.waiting import wait_until


def _fast_presence(config: dict[str, Any]) -> None:
    config["presence"] = {
        "idle_timeout_ms": 300,
        "offline_timeout_ms": 1_000,
        "sweep_interval_ms": 100,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("presence_sweep"), tweak=_fast_presence) as srv:
        yield srv


def test_long_poller_sees_online_then_unavailable_then_offline(server: SingleServer) -> None:
    alice, bob = server.new_user("alice"), server.new_user("bob")
    room_id = ok(alice.create_room(preset="public_chat"))["room_id"]
    ok(bob.join(room_id))
    since = ok(bob.sync())["next_batch"]

    ok(alice.sync())  # alice shows up once (set_presence defaults to online), then stops
    seen: list[str] = []

    def alice_offline() -> bool:
        nonlocal since
        resp = ok(bob.sync(since=since, timeout_ms=2_000))
        since = resp["next_batch"]
        for event in resp.get("presence", {}).get("events", []):
            if event["sender"] == alice.user_id:
                state = event["content"]["presence"]
                if not seen or seen[-1] != state:
                    seen.append(state)
        return bool(seen) and seen[-1] == "offline"

    wait_until(alice_offline, 20, 0.01, description="alice going offline in bob's /sync")
    assert seen == ["online", "unavailable", "offline"]
    got = ok(bob.call("GET", f"presence/{quote(alice.user_id or '')}/status"))
    assert got["presence"] == "offline"
    assert server.new_errors() == []


def test_a_self_set_unavailable_user_is_left_alone(server: SingleServer) -> None:
    carol, dave = server.new_user("carol"), server.new_user("dave")
    room_id = ok(carol.create_room(preset="public_chat"))["room_id"]
    ok(dave.join(room_id))
    path = f"presence/{quote(carol.user_id or '')}/status"
    ok(carol.call("PUT", path, {"presence": "unavailable", "status_msg": "away"}))
    # dave's own presence goes idle and then offline through the sweep: by then carol's
    # would have too, were the sweep to touch her.
    dave_path = f"presence/{quote(dave.user_id or '')}/status"
    ok(dave.sync())
    ok(dave.call("PUT", dave_path, {"presence": "online"}))
    wait_until(
        lambda: ok(dave.call("GET", dave_path))["presence"] == "offline",
        20,
        description="dave swept offline",
    )
    got = ok(dave.call("GET", path))
    assert got["presence"] == "unavailable" and got["status_msg"] == "away"
