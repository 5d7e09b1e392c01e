"""Room IDs of version 12 are the create event's hash: identical concurrent creates by one
user must still give distinct rooms, never a server error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.harness.single import SingleServer


def test_identical_concurrent_creates_give_distinct_rooms(single: SingleServer) -> None:
    alice = single.new_user("alice")
    body = {"preset": "private_chat", "room_version": "12"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: alice.call("POST", "createRoom", body), range(8)))
    assert [status for status, _ in results] == [200] * 8, results
    room_ids = {body["room_id"] for _, body in results}
    assert len(room_ids) == 8
    status, joined = alice.call("GET", "joined_rooms")
    assert status == 200 and room_ids <= set(joined["joined_rooms"])
    assert single.new_errors() == []
