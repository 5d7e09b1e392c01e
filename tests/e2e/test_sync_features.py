"""/sync features end to end through nginx with sync workers, driven by matrix-nio:
lazy-loaded members, and a limited timeline filled in by paginating /messages back from
its prev_batch (the /messages request goes to main, the /sync ones to a sync worker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    MessageDirection,
    RegisterResponse,
    RoomCreateResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.harness.ganglion import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nginx]


async def _register(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    resp = await client.register(name, "a long enough password")
    assert isinstance(resp, RegisterResponse), resp
    return client


async def _send(client: AsyncClient, room_id: str, body: str) -> str:
    resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(resp, RoomSendResponse), resp
    return str(resp.event_id)


async def _sync_until(
    client: AsyncClient, since: str | None, sync_filter: dict[str, Any], room_id: str, event_id: str
) -> SyncResponse:
    """Syncs from `since` until the room's timeline ends with `event_id` (deadline 60 s)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        resp = await client.sync(
            timeout=0, since=since, sync_filter=sync_filter, full_state=since is None
        )
        assert isinstance(resp, SyncResponse), resp
        room = resp.rooms.join.get(room_id)
        if (
            room is not None
            and room.timeline.events
            and room.timeline.events[-1].event_id == event_id
        ):
            return resp
        assert asyncio.get_running_loop().time() < deadline, "the sync worker never caught up"
        await asyncio.sleep(0.05)


async def _scenario(dep: Deployment) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = [f"{who}{suffix}" for who in ("alice", "bob", "carol", "dave")]
    alice, bob, carol, dave = [await _register(dep.proxy_url, n) for n in names]
    try:
        created = await alice.room_create(name="features", preset=None, invite=[])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        # Public, so the others can join.
        state = await alice.room_put_state(room_id, "m.room.join_rules", {"join_rule": "public"})
        assert not hasattr(state, "status_code"), state
        for member in (bob, carol, dave):
            joined = await member.join(room_id)
            assert isinstance(joined, JoinResponse), joined
        spoken = await _send(carol, room_id, "carol speaks")

        # Lazy loading: only the speaker, the syncing user and the heroes' members. (Bob's
        # sync worker follows main: sync until it has caught up with carol's message.)
        lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
        first = await _sync_until(bob, None, lazy, room_id, spoken)
        room = first.rooms.join[room_id]
        assert [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)] == [
            "carol speaks"
        ]
        members = {e.state_key for e in room.state if isinstance(e, RoomMemberEvent)}
        heroes = set(room.summary.heroes or [])
        assert bob.user_id not in heroes
        assert members == {carol.user_id, bob.user_id} | heroes
        assert room.summary.joined_member_count == 4

        # A gap: more messages than the timeline limit, then back-pagination from prev_batch.
        sent = [await _send(alice, room_id, f"gap {i}") for i in range(12)]
        # Each of these syncs is the same gappy one from first.next_batch, until the worker
        # has caught up with the last message.
        limit3 = {"room": {"timeline": {"limit": 3}}}
        gappy = await _sync_until(bob, first.next_batch, limit3, room_id, sent[-1])
        timeline = gappy.rooms.join[room_id].timeline
        assert timeline.limited
        assert [e.event_id for e in timeline.events] == sent[-3:]

        seen: list[str] = []
        types_seen: set[str] = set()
        token = timeline.prev_batch
        for _ in range(20):
            page = await bob.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=4
            )
            assert isinstance(page, RoomMessagesResponse), page
            seen += [e.event_id for e in page.chunk]
            types_seen.update(str(e.source.get("type")) for e in page.chunk)
            if not page.end or not page.chunk:
                break
            token = page.end
        older = [eid for eid in reversed(seen) if eid in set(sent)]
        assert older == sent[:-3]
        assert not set(seen) & set(sent[-3:])
        # Paginated all the way back to the room's creation.
        assert "m.room.create" in types_seen
    finally:
        for client in (alice, bob, carol, dave):
            await client.close()


def test_lazy_members_and_back_pagination_through_nginx(deployment: Deployment) -> None:
    asyncio.run(_scenario(deployment))
