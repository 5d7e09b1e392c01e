"""The README's first command, as a user runs it: one process on SQLite, a real client."""

from __future__ import annotations

import asyncio

from nio import AsyncClient, RegisterResponse, RoomCreateResponse, RoomSendResponse, SyncResponse

from tests.harness.single import SingleServer


async def _chat(base_url: str) -> None:
    alice, bob = AsyncClient(base_url, "alice_single"), AsyncClient(base_url, "bob_single")
    try:
        for client in (alice, bob):
            assert isinstance(
                await client.register(client.user, "password one two"), RegisterResponse
            )
        created = await alice.room_create(invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        await bob.join(created.room_id)
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        sent = await alice.room_send(
            created.room_id, "m.room.message", {"msgtype": "m.text", "body": "hi from one process"}
        )
        assert isinstance(sent, RoomSendResponse), sent
        nxt = await bob.sync(timeout=30_000, since=first.next_batch)
        assert isinstance(nxt, SyncResponse)
        bodies = [getattr(e, "body", None) for e in nxt.rooms.join[created.room_id].timeline.events]
        assert "hi from one process" in bodies
    finally:
        await alice.close()
        await bob.close()


def test_a_client_chats_on_a_single_sqlite_process(single: SingleServer) -> None:
    assert single.config["database"]["name"] == "sqlite3"
    assert not single.config.get("workers")
    asyncio.run(_chat(single.base_url))
    assert single.new_errors() == []
