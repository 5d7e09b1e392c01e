"""The storage layer on both engines: migrations, accounts, and events (write and read side).

Every test runs once on SQLite (a temporary file) and once on PostgreSQL (a fresh
database from the harness; fails in CI, skips elsewhere when PostgreSQL is missing).
The store API runs transactions on Twisted's adbapi thread pool, so the tests run
on the real reactor through pytest-twisted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from signedjson.key import generate_signing_key
from twisted.internet import defer

from homeserver.events.builder import build_event, room_id_for_create_event
from homeserver.events.event import Event
from homeserver.events.hashing import compute_event_id
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from storage import migrations
from storage.database import Database
from storage.migrations import SchemaError, check_schema, code_schema_version, prepare_database
from storage.stores.accounts import AccountStore, TokenInfo
from storage.stores.event_persist import EventPersistStore
from storage.stores.events import EventStore, PersistedEvent
from tests.harness.databases import blockon

SERVER = "hs.test"
ALICE = f"@alice:{SERVER}"
BOB = f"@bob:{SERVER}"
CAROL = f"@carol:{SERVER}"
DEVICE = "ALICEDEV"
NOW = 1_700_000_000_000
RV = KNOWN_ROOM_VERSIONS["12"]
SIGNING_KEY = generate_signing_key("a")

UNICODE_TEXT = 'héllo wörld — 日本語 🎉 "quoted" \\ back\nslash \u0000 \u2028 end'


def _blockon(coro: Any) -> Any:
    return blockon(coro)


# ------------------------------------------------------------------ helpers --


async def _schema_rows(db: Database) -> list[tuple[Any, ...]]:
    return await db.select("test_schema_rows", "SELECT version FROM schema_version")


async def _set_schema_version(db: Database, version: int) -> None:
    await db.run(
        "test_set_version",
        lambda txn: txn.execute("UPDATE schema_version SET version = ?", (version,)),
    )


async def _table_names(db: Database) -> set[str]:
    if db.engine.is_postgres:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {r[0] for r in await db.select("test_tables", sql)}


def _canonical(pdu: Any) -> str:
    return json.dumps(pdu, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Room:
    """Builds a chain of v12 events and persists each with the next stream ordering."""

    def __init__(self, persist: EventPersistStore, stream: list[int]) -> None:
        self.persist = persist
        self.stream = stream  # shared [last stream ordering] between rooms
        self.room_id = ""
        self.events: list[tuple[Event, int]] = []
        self.extremities: list[str] = []
        self.depth = 0

    def build(
        self,
        type: str,
        content: dict[str, Any],
        *,
        sender: str = ALICE,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
    ) -> Event:
        prevs = list(self.extremities if prev is None else prev)
        is_create = type == "m.room.create"
        return build_event(
            RV,
            sender=sender,
            type=type,
            content=content,
            server_name=SERVER,
            signing_key=SIGNING_KEY,
            origin_server_ts=NOW + self.stream[0] + 1,
            depth=self.depth + 1,
            prev_event_ids=prevs,
            auth_event_ids=[] if is_create else [e.event_id for e, _ in self.events[1:3]],
            room_id=None if is_create else self.room_id,
            state_key=state_key,
        )

    async def send(
        self,
        type: str,
        content: dict[str, Any],
        *,
        txn: tuple[str, str, str] | None = None,
        prev: Sequence[str] | None = None,
        **kw: Any,
    ) -> tuple[Event, int]:
        event = self.build(type, content, prev=prev, **kw)
        self.stream[0] += 1
        pos = self.stream[0]
        creator = event.sender if type == "m.room.create" else None
        await self.persist.persist_event(event, pos, NOW + pos, new_room_creator=creator, txn=txn)
        if type == "m.room.create":
            self.room_id = room_id_for_create_event(event)
        used = set(self.extremities if prev is None else prev)
        self.extremities = [e for e in self.extremities if e not in used] + [event.event_id]
        self.depth += 1
        self.events.append((event, pos))
        return event, pos

    async def create(self, creator: str = ALICE) -> None:
        await self.send("m.room.create", {"room_version": "12"}, sender=creator, state_key="")
        await self.send("m.room.member", {"membership": "join"}, sender=creator, state_key=creator)
        await self.send(
            "m.room.power_levels",
            {"users": {creator: 100}, "users_default": 0, "events_default": 0},
            sender=creator,
            state_key="",
        )

    async def member(self, user: str, membership: str) -> tuple[Event, int]:
        return await self.send(
            "m.room.member", {"membership": membership}, sender=user, state_key=user
        )

    async def message(
        self, text: str, sender: str = ALICE, txn: tuple[str, str, str] | None = None
    ) -> tuple[Event, int]:
        return await self.send(
            "m.room.message", {"msgtype": "m.text", "body": text}, sender=sender, txn=txn
        )


def _positions(events: list[PersistedEvent]) -> list[int]:
    return [pe.stream_ordering for pe in events]


# --------------------------------------------------------------- migrations --


@pytest_twisted.ensureDeferred
async def test_prepare_applies_migrations_once(raw_db: Database) -> None:
    want = code_schema_version(raw_db.engine.is_postgres)
    assert want >= 1
    # Before: no schema at all, and workers refuse to run on it.
    assert "schema_version" not in await _table_names(raw_db)
    with pytest.raises(SchemaError, match="start the main process first"):
        await check_schema(raw_db)

    assert await prepare_database(raw_db) == want
    tables = await _table_names(raw_db)
    assert {
        "schema_version", "users", "devices", "access_tokens", "rooms", "events",
        "event_edges", "event_auth", "forward_extremities", "current_state_events",
        "room_memberships", "event_txn_ids",
    } <= tables  # fmt: skip
    assert await _schema_rows(raw_db) == [(want,)]
    assert await check_schema(raw_db) == want

    # Data written in between survives a second prepare, which changes nothing.
    accounts = AccountStore(raw_db)
    assert await accounts.create_user(ALICE, "hash", NOW) is True
    assert await prepare_database(raw_db) == want
    assert await prepare_database(raw_db) == want
    assert await _schema_rows(raw_db) == [(want,)]
    assert await _table_names(raw_db) == tables
    assert await accounts.get_user(ALICE) == ("hash", False, False)


@pytest_twisted.ensureDeferred
async def test_failed_migration_is_rolled_back_entirely(
    raw_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half-way leaves no trace, so the next start can apply it."""
    real = migrations._migrations

    def with_broken_migration(engine_is_postgres: bool) -> list[tuple[int, str, str]]:
        found = real(engine_is_postgres)
        broken = "CREATE TABLE half_done (x INTEGER);\nSELECT nope FROM no_such_table;"
        return [*found, (found[-1][0] + 1, "9999_broken.sql", broken)]

    monkeypatch.setattr(migrations, "_migrations", with_broken_migration)
    with pytest.raises(Exception):  # noqa: B017 - sqlite3 and psycopg2 raise their own errors
        await prepare_database(raw_db)
    assert not {"schema_version", "users", "half_done"} & await _table_names(raw_db)

    monkeypatch.undo()
    want = code_schema_version(raw_db.engine.is_postgres)
    assert await prepare_database(raw_db) == want
    assert await _schema_rows(raw_db) == [(want,)]
    assert "half_done" not in await _table_names(raw_db)


@pytest_twisted.ensureDeferred
async def test_schema_newer_than_code_is_refused(db: Database) -> None:
    want = code_schema_version(db.engine.is_postgres)
    await _set_schema_version(db, want + 1)
    with pytest.raises(SchemaError, match="newer than this code"):
        await prepare_database(db)
    with pytest.raises(SchemaError, match="newer than this code"):
        await check_schema(db)
    # The refusal left the database alone.
    assert await _schema_rows(db) == [(want + 1,)]


@pytest_twisted.ensureDeferred
async def test_check_schema_refuses_older_schema(db: Database) -> None:
    want = code_schema_version(db.engine.is_postgres)
    await _set_schema_version(db, want - 1)
    with pytest.raises(SchemaError, match=f"at version {want - 1} but this code needs {want}"):
        await check_schema(db)
    await _set_schema_version(db, want)
    assert await check_schema(db) == want


# ----------------------------------------------------------------- accounts --


@pytest_twisted.ensureDeferred
async def test_users(db: Database) -> None:
    accounts = AccountStore(db)
    assert await accounts.get_user(ALICE) is None
    assert await accounts.create_user(ALICE, "$2b$hash", NOW) is True
    assert await accounts.create_user(BOB, None, NOW, admin=True) is True
    assert await accounts.create_user(ALICE, "other", NOW + 1) is False
    assert await accounts.get_user(ALICE) == ("$2b$hash", False, False)
    assert await accounts.get_user(BOB) == (None, True, False)
    assert await accounts.get_user(CAROL) is None


@pytest_twisted.ensureDeferred
async def test_concurrent_duplicate_user_creation(db: Database) -> None:
    """Racing registrations of one user ID: exactly one wins, the others get False."""
    accounts = AccountStore(db)
    for round in range(10):  # the first round runs while the pool's threads start up
        user_id = f"@racer{round}:{SERVER}"
        results = await defer.gatherResults(
            [defer.ensureDeferred(accounts.create_user(user_id, f"h{i}", NOW)) for i in range(8)],
            consumeErrors=True,
        )
        assert sorted(results) == [False] * 7 + [True]
    rows = await db.select("test_users", "SELECT COUNT(*) FROM users")
    assert rows == [(10,)]


@pytest_twisted.ensureDeferred
async def test_sessions_and_tokens(db: Database) -> None:
    accounts = AccountStore(db)
    assert await accounts.create_user(ALICE, "h", NOW)
    assert await accounts.create_user(BOB, "h", NOW)
    assert await accounts.get_token("tok1") is None

    await accounts.create_session(ALICE, DEVICE, "tok1", "Phone", NOW)
    await accounts.create_session(ALICE, "OTHER", "tok2", None, NOW)
    await accounts.create_session(BOB, DEVICE, "tok3", None, NOW)
    assert await accounts.get_token("tok1") == TokenInfo(ALICE, DEVICE, "tok1")
    assert await accounts.get_token("tok2") == TokenInfo(ALICE, "OTHER", "tok2")
    assert await accounts.get_token("tok3") == TokenInfo(BOB, DEVICE, "tok3")

    # Logging in again on the same device replaces that device's token only.
    await accounts.create_session(ALICE, DEVICE, "tok1b", "Phone", NOW + 1)
    assert await accounts.get_token("tok1") is None
    assert await accounts.get_token("tok1b") == TokenInfo(ALICE, DEVICE, "tok1b")
    assert await accounts.get_token("tok2") == TokenInfo(ALICE, "OTHER", "tok2")
    assert await accounts.get_token("tok3") == TokenInfo(BOB, DEVICE, "tok3")
    devices = await db.select(
        "test_devices",
        "SELECT device_id, display_name FROM devices WHERE user_id = ? ORDER BY device_id",
        (ALICE,),
    )
    assert devices == [(DEVICE, "Phone"), ("OTHER", None)]

    # Logout deletes the token and its device, nothing else.
    await accounts.delete_token("tok1b")
    assert await accounts.get_token("tok1b") is None
    assert await accounts.get_token("tok2") == TokenInfo(ALICE, "OTHER", "tok2")
    assert await accounts.get_token("tok3") == TokenInfo(BOB, DEVICE, "tok3")
    devices = await db.select(
        "test_devices", "SELECT device_id FROM devices WHERE user_id = ?", (ALICE,)
    )
    assert devices == [("OTHER",)]
    await accounts.delete_token("no-such-token")  # harmless

    # A deactivated user's tokens stop working.
    await db.run(
        "test_deactivate",
        lambda txn: txn.execute("UPDATE users SET deactivated = 1 WHERE user_id = ?", (BOB,)),
    )
    assert await accounts.get_token("tok3") is None


@pytest_twisted.ensureDeferred
async def test_concurrent_logins_on_one_device(db: Database) -> None:
    """Racing logins that name the same device ID all succeed; the device exists once."""
    accounts = AccountStore(db)
    assert await accounts.create_user(ALICE, "h", NOW)
    for round in range(10):
        device = f"DEV{round}"
        tokens = [f"tok-{round}-{i}" for i in range(6)]
        await defer.gatherResults(
            [
                defer.ensureDeferred(accounts.create_session(ALICE, device, t, None, NOW))
                for t in tokens
            ],
            consumeErrors=True,
        )
        rows = await db.select(
            "test_devices",
            "SELECT COUNT(*) FROM devices WHERE user_id = ? AND device_id = ?",
            (ALICE, device),
        )
        assert rows == [(1,)]
        valid = [t for t in tokens if await accounts.get_token(t) is not None]
        assert len(valid) >= 1


# ------------------------------------------------------------------- events --


@pytest_twisted.ensureDeferred
async def test_persist_and_read_back_events(db: Database) -> None:
    persist = EventPersistStore(db)
    store = EventStore(db)
    assert await store.get_max_stream_ordering() == 0

    stream = [0]
    room = Room(persist, stream)
    await room.create()
    (create, p_create), (alice_join, p_alice), (power, p_power) = room.events
    assert p_create == 1 and p_power == 3

    # v12: the room ID is derived from the create event's ID, which has no room_id.
    assert "room_id" not in create.pdu
    assert room.room_id == "!" + create.event_id[1:]
    assert create.room_id == room.room_id
    assert await store.get_room_version(room.room_id) == "12"
    assert await store.get_room_version("!nope:hs.test") is None

    msg1, p_msg1 = await room.message(UNICODE_TEXT, txn=(ALICE, DEVICE, "txn-1"))
    bob_join, p_bob_join = await room.member(BOB, "join")
    msg2, p_msg2 = await room.message("from bob", sender=BOB)
    topic, p_topic = await room.send("m.room.topic", {"topic": "Tópico"}, state_key="")
    bob_leave, p_bob_leave = await room.member(BOB, "leave")
    msg3, p_msg3 = await room.message("after bob left")
    assert [p for _, p in room.events] == list(range(1, 10))
    assert await store.get_max_stream_ordering() == 9

    # -- get_event(s): exact round trip of the PDU JSON.
    all_ids = [e.event_id for e, _ in room.events]
    got = await store.get_events(all_ids + ["$missing"])
    assert set(got) == set(all_ids)
    for event, pos in room.events:
        pe = got[event.event_id]
        assert pe.stream_ordering == pos
        assert pe.event.event_id == event.event_id
        assert pe.event.room_version is RV
        assert pe.event.pdu == event.pdu
        assert _canonical(pe.event.pdu) == _canonical(event.pdu)
        # The stored JSON still hashes to the same event ID.
        assert compute_event_id(dict(pe.event.pdu), RV) == event.event_id
    read_msg1 = await store.get_event(msg1.event_id)
    assert read_msg1 is not None
    assert read_msg1.event.content["body"] == UNICODE_TEXT
    assert read_msg1.txn == (ALICE, DEVICE, "txn-1")
    read_msg2 = await store.get_event(msg2.event_id)
    assert read_msg2 is not None and read_msg2.txn is None
    assert await store.get_event("$missing") is None
    assert await store.get_events([]) == {}

    # -- current state.
    state = await store.get_current_state_ids(room.room_id)
    assert state == {
        ("m.room.create", ""): create.event_id,
        ("m.room.member", ALICE): alice_join.event_id,
        ("m.room.member", BOB): bob_leave.event_id,
        ("m.room.power_levels", ""): power.event_id,
        ("m.room.topic", ""): topic.event_id,
    }
    full_state = await store.get_current_state(room.room_id)
    assert {k: v.event.event_id for k, v in full_state.items()} == state
    pl = await store.get_current_state_event(room.room_id, "m.room.power_levels", "")
    assert pl is not None and pl.event.pdu == power.pdu
    assert await store.get_current_state_event(room.room_id, "m.room.name", "") is None
    assert await store.get_current_state_ids("!other:hs.test") == {}

    # -- forward extremities: always the newest event of a linear chain.
    assert await store.get_forward_extremities(room.room_id) == [(msg3.event_id, 9)]

    # -- memberships.
    assert await store.get_rooms_for_user(ALICE) == {room.room_id: "join"}
    assert await store.get_rooms_for_user(BOB) == {room.room_id: "leave"}
    assert await store.get_rooms_for_user(CAROL) == {}
    rid = room.room_id
    assert await store.get_membership_at(BOB, [rid], p_bob_join - 1) == {}
    assert await store.get_membership_at(BOB, [rid], p_bob_join) == {rid: "join"}
    assert await store.get_membership_at(BOB, [rid], p_bob_leave - 1) == {rid: "join"}
    assert await store.get_membership_at(BOB, [rid], p_bob_leave) == {rid: "leave"}
    assert await store.get_membership_at(BOB, [], 100) == {}
    assert await store.get_membership_at(ALICE, [rid, "!x:hs.test"], 100) == {rid: "join"}
    assert await store.get_membership_changes(BOB, 0, 9) == [
        (rid, "join", p_bob_join),
        (rid, "leave", p_bob_leave),
    ]
    # (from, to]: the lower bound is exclusive, the upper inclusive.
    assert await store.get_membership_changes(BOB, p_bob_join, p_bob_leave) == [
        (rid, "leave", p_bob_leave)
    ]
    assert await store.get_membership_changes(BOB, 0, p_bob_join) == [(rid, "join", p_bob_join)]
    assert await store.get_membership_changes(BOB, p_bob_leave, 100) == []
    assert await store.get_membership_changes(ALICE, 0, 100) == [(rid, "join", p_alice)]

    # -- timeline pagination: backwards is (after, before_or_at] newest first.
    back = await store.get_room_events_backwards(rid, p_bob_leave, p_msg1, 100)
    assert _positions(back) == [8, 7, 6, 5]
    back = await store.get_room_events_backwards(rid, p_bob_leave, p_msg1, 2)
    assert _positions(back) == [8, 7]
    back = await store.get_room_events_backwards(rid, 100, 0, 100)
    assert _positions(back) == list(range(9, 0, -1))
    assert [pe.event.pdu for pe in back] == [e.pdu for e, _ in reversed(room.events)]
    assert await store.get_room_events_backwards(rid, 3, 3, 10) == []
    # Forwards is (after, up_to] oldest first.
    fwd = await store.get_room_events_forwards(rid, p_msg1, p_bob_leave, 100)
    assert _positions(fwd) == [5, 6, 7, 8]
    fwd = await store.get_room_events_forwards(rid, p_msg1, p_bob_leave, 2)
    assert _positions(fwd) == [5, 6]
    fwd = await store.get_room_events_forwards(rid, 0, 100, 100)
    assert [pe.event.event_id for pe in fwd] == all_ids
    assert fwd[3].txn == (ALICE, DEVICE, "txn-1")
    assert await store.get_room_events_forwards("!other:hs.test", 0, 100, 100) == []

    # -- state events in (after, up_to], oldest first.
    states = await store.get_state_events_between(rid, p_create, p_bob_leave)
    assert [pe.event.event_id for pe in states] == [
        alice_join.event_id,
        power.event_id,
        bob_join.event_id,
        topic.event_id,
        bob_leave.event_id,
    ]
    states = await store.get_state_events_between(rid, p_topic, 100)
    assert [pe.event.event_id for pe in states] == [bob_leave.event_id]
    assert await store.get_state_events_between(rid, p_msg3, 100) == []

    # -- stream rows.
    rows = await store.get_stream_rows(p_msg1 - 1, p_bob_leave)
    assert [(r.stream_ordering, r.room_id, r.type, r.state_key, r.membership) for r in rows] == [
        (4, rid, "m.room.message", None, None),
        (5, rid, "m.room.member", BOB, "join"),
        (6, rid, "m.room.message", None, None),
        (7, rid, "m.room.topic", "", None),
        (8, rid, "m.room.member", BOB, "leave"),
    ]
    assert [r.stream_ordering for r in await store.get_stream_rows(0, 100, limit=3)] == [1, 2, 3]
    assert await store.get_stream_rows(9, 100) == []

    # -- client transaction IDs.
    assert await store.get_event_id_for_txn(ALICE, DEVICE, "txn-1") == msg1.event_id
    assert await store.get_event_id_for_txn(ALICE, "OTHERDEV", "txn-1") is None
    assert await store.get_event_id_for_txn(BOB, DEVICE, "txn-1") is None
    assert await store.get_event_id_for_txn(ALICE, DEVICE, "txn-2") is None


@pytest_twisted.ensureDeferred
async def test_two_rooms_and_rooms_changed(db: Database) -> None:
    persist = EventPersistStore(db)
    store = EventStore(db)
    stream = [0]
    room_a = Room(persist, stream)
    await room_a.create(ALICE)  # 1..3
    room_b = Room(persist, stream)
    await room_b.create(BOB)  # 4..6
    assert room_a.room_id != room_b.room_id
    await room_b.member(ALICE, "join")  # 7
    await room_a.message("a1")  # 8
    await room_b.message("b1", sender=BOB)  # 9
    await room_b.member(ALICE, "leave")  # 10
    assert await store.get_max_stream_ordering() == 10
    a, b = room_a.room_id, room_b.room_id

    assert await store.get_rooms_for_user(ALICE) == {a: "join", b: "leave"}
    assert await store.get_rooms_for_user(BOB) == {b: "join"}
    assert await store.get_membership_at(ALICE, [a, b], 8) == {a: "join", b: "join"}
    assert await store.get_membership_at(ALICE, [a, b], 10) == {a: "join", b: "leave"}
    assert await store.get_membership_changes(ALICE, 3, 10) == [(b, "join", 7), (b, "leave", 10)]

    assert await store.get_rooms_changed([a, b], 0, 10) == {a, b}
    assert await store.get_rooms_changed([a, b], 8, 10) == {b}
    assert await store.get_rooms_changed([a, b], 7, 8) == {a}
    assert await store.get_rooms_changed([a], 8, 10) == set()
    assert await store.get_rooms_changed([a, b], 10, 100) == set()
    assert await store.get_rooms_changed([a, b], 8, 8) == set()
    assert await store.get_rooms_changed([], 0, 10) == set()

    rows = await store.get_stream_rows(6, 10)
    assert [(r.stream_ordering, r.room_id) for r in rows] == [(7, b), (8, a), (9, b), (10, b)]

    # Each room's timeline holds only its own events.
    a_events = await store.get_room_events_forwards(a, 0, 100, 100)
    assert _positions(a_events) == [1, 2, 3, 8]
    b_events = await store.get_room_events_backwards(b, 100, 0, 100)
    assert _positions(b_events) == [10, 9, 7, 6, 5, 4]


@pytest_twisted.ensureDeferred
async def test_forward_extremities_fork_and_merge(db: Database) -> None:
    persist = EventPersistStore(db)
    store = EventStore(db)
    room = Room(persist, [0])
    await room.create()
    base = room.extremities[0]
    fork1, _ = await room.send("m.room.message", {"body": "one", "msgtype": "m.text"}, prev=[base])
    fork2, _ = await room.send("m.room.message", {"body": "two", "msgtype": "m.text"}, prev=[base])
    extremities = await store.get_forward_extremities(room.room_id)
    assert sorted(extremities) == sorted([(fork1.event_id, 4), (fork2.event_id, 5)])

    merge, _ = await room.send(
        "m.room.message", {"body": "m", "msgtype": "m.text"}, prev=[fork1.event_id, fork2.event_id]
    )
    assert await store.get_forward_extremities(room.room_id) == [(merge.event_id, 6)]
    edges = await db.select(
        "test_edges",
        "SELECT prev_event_id FROM event_edges WHERE event_id = ? ORDER BY prev_event_id",
        (merge.event_id,),
    )
    assert edges == sorted([(fork1.event_id,), (fork2.event_id,)])
    auth = await db.select(
        "test_auth", "SELECT auth_event_id FROM event_auth WHERE event_id = ?", (merge.event_id,)
    )
    assert sorted(auth) == sorted((e.event_id,) for e, _ in room.events[1:3])


@pytest_twisted.ensureDeferred
async def test_persisting_same_event_twice_fails_atomically(db: Database) -> None:
    """A failed persist leaves nothing half-written (the transaction rolls back)."""
    persist = EventPersistStore(db)
    store = EventStore(db)
    room = Room(persist, [0])
    await room.create()
    msg, pos = await room.message("once")
    before_state = await store.get_current_state_ids(room.room_id)
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError differs
        await persist.persist_event(msg, pos + 1, NOW)
    assert await store.get_max_stream_ordering() == pos
    assert await store.get_forward_extremities(room.room_id) == [(msg.event_id, pos)]
    assert await store.get_current_state_ids(room.room_id) == before_state
