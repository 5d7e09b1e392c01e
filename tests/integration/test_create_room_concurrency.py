"""Room IDs of version 12 are the create event's hash: two identical creates by one user in
the same millisecond must still give distinct rooms, never a storage error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from signedjson.key import generate_signing_key
from twisted.internet import defer, task

from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.persister import EventPersister
from homeserver.notifier import Notifier
from replication.streams import StreamIdGenerator, StreamPositionTracker
from storage.database import Database
from storage.migrations import prepare_database
from storage.stores.event_persist import EventPersistStore
from storage.stores.events import EventStore
from tests.harness.single import SingleServer
from workers.config import DatabaseConfig


def _blockon(coro: Any) -> Any:
    return pytest_twisted.blockon(defer.ensureDeferred(coro))


@pytest.fixture
def creation(tmp_path: Path) -> Iterator[EventCreationHandler]:
    db = Database(DatabaseConfig(engine="sqlite3", sqlite_path=str(tmp_path / "g.db")))
    _blockon(prepare_database(db))
    clock = task.Clock()
    tracker = StreamPositionTracker("events", "main", clock)
    persister = EventPersister(
        EventPersistStore(db), StreamIdGenerator(0), tracker, Notifier(clock), lambda pos: None,
        lambda: 1_000,
    )  # fmt: skip
    # A frozen clock: every event is built in the same millisecond.
    yield EventCreationHandler(
        "localhost", generate_signing_key("a"), EventStore(db), persister, lambda: 1_000
    )
    db.close()


@pytest.mark.parametrize("version", ["12", "11"])
@pytest_twisted.ensureDeferred
async def test_identical_creates_in_one_millisecond_give_distinct_rooms(
    creation: EventCreationHandler, version: str
) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    content = {"room_version": version}
    first, _ = await creation.create_room_event(rv, "@alice:localhost", content)
    second, _ = await creation.create_room_event(rv, "@alice:localhost", content)
    assert first.room_id != second.room_id
    for event in (first, second):
        assert await creation.store.get_room_version(event.room_id) == version


def test_concurrent_creates_over_http_all_succeed(single: SingleServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice = single.new_user("alice")
    body = {"preset": "private_chat", "room_version": "12"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: alice.call("POST", "createRoom", body), range(8)))
    assert [status for status, _ in results] == [200] * 8, results
    assert len({b["room_id"] for _, b in results}) == 8
    assert single.new_errors() == []
