"""Room state at events (storage/stores/state.py) on both engines.

Every test runs once on SQLite and once on PostgreSQL (fails in CI, skips elsewhere when
PostgreSQL is missing). Events are built and persisted through EventPersistStore with the
state persist hook, exactly as the events writer does; expectations come from replaying
the state events naively, or (for forks) from calling state resolution directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from signedjson.key import generate_signing_key
from twisted.internet import defer, reactor, threads

from homeserver.events.auth import auth_types_for_event
from homeserver.events.builder import build_event, room_id_for_create_event
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.state_res import resolve_state
from storage.database import Database
from storage.stores.event_persist import PERSIST_HOOKS, EventPersistStore, PersistHook
from storage.stores.state import (
    STATE_PERSIST_HOOK,
    StateGroupPersistHook,
    StateNotFoundError,
    StateStore,
)
from tests.harness.databases import blockon

SERVER = "hs.test"
ALICE = f"@alice:{SERVER}"
BOB = f"@bob:{SERVER}"
CAROL = f"@carol:{SERVER}"
NOW = 1_700_000_000_000
RV = KNOWN_ROOM_VERSIONS["12"]
SIGNING_KEY = generate_signing_key("s")


def _blockon(coro: Any) -> Any:
    return blockon(coro)


class Room:
    """Builds v12 events, persists them, and replays state naively.

    The naive replay covers every event with at most one prev event (the state after its
    prev event, plus itself); events merging several prev events are left to the tests.
    `stream` is shared between rooms of one database (the last stream ordering used).
    """

    def __init__(self, persist: EventPersistStore, stream: list[int]) -> None:
        self.persist = persist
        self.stream = stream
        self.room_id = ""
        self.events: list[Event] = []
        self.by_id: dict[str, Event] = {}
        self.extremities: list[str] = []
        self.depth = 0
        # The naive replay: the state before and after each event it covers.
        self.after: dict[str, dict[StateKey, str]] = {}
        self.before: dict[str, dict[StateKey, str]] = {}

    @property
    def state(self) -> dict[StateKey, str]:
        """The state after the last event (when the replay covers it)."""
        return dict(self.after[self.events[-1].event_id])

    def _replayed_before(self, prevs: Sequence[str]) -> dict[StateKey, str] | None:
        if not prevs:
            return {}
        if len(prevs) == 1 and prevs[0] in self.after:
            return self.after[prevs[0]]
        return None

    def build(
        self,
        type: str,
        content: dict[str, Any],
        *,
        sender: str = ALICE,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
    ) -> Event:
        is_create = type == "m.room.create"
        prevs = list(self.extremities if prev is None else prev)
        # Proper auth events, drawn from the state the event is sent on.
        state = self._replayed_before(prevs[:1]) or {}
        auth_keys = auth_types_for_event(RV, type, sender, state_key, content)
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
            auth_event_ids=[state[k] for k in auth_keys if k in state],
            room_id=None if is_create else self.room_id,
            state_key=state_key,
        )

    async def store(self, event: Event) -> int:
        self.stream[0] += 1
        pos = self.stream[0]
        creator = event.sender if event.type == "m.room.create" else None
        await self.persist.persist_event(event, pos, NOW + pos, new_room_creator=creator)
        if event.type == "m.room.create":
            self.room_id = room_id_for_create_event(event)
        used = set(event.prev_event_ids)
        self.extremities = [e for e in self.extremities if e not in used] + [event.event_id]
        self.depth = max(self.depth, event.depth)
        self.events.append(event)
        self.by_id[event.event_id] = event
        before = self._replayed_before(event.prev_event_ids)
        if before is not None:
            after = dict(before)
            if event.state_key is not None and not event.rejected:
                after[event.key] = event.event_id
            self.before[event.event_id] = dict(before)
            self.after[event.event_id] = after
        return pos

    async def send(
        self, type: str, content: dict[str, Any], *, prev: Sequence[str] | None = None, **kw: Any
    ) -> Event:
        event = self.build(type, content, prev=prev, **kw)
        await self.store(event)
        return event

    async def create(self) -> None:
        await self.send("m.room.create", {"room_version": "12"}, state_key="")
        await self.send("m.room.member", {"membership": "join"}, state_key=ALICE)
        await self.send(
            "m.room.power_levels",
            {"users": {ALICE: 100}, "users_default": 0, "events_default": 0, "state_default": 50},
            state_key="",
        )
        await self.send("m.room.join_rules", {"join_rule": "public"}, state_key="")

    async def member(self, user: str, membership: str = "join", **kw: Any) -> Event:
        return await self.send(
            "m.room.member", {"membership": membership}, sender=user, state_key=user, **kw
        )

    async def topic(self, text: str, **kw: Any) -> Event:
        return await self.send("m.room.topic", {"topic": text}, state_key="", **kw)

    async def message(self, text: str, sender: str = ALICE, **kw: Any) -> Event:
        return await self.send(
            "m.room.message", {"msgtype": "m.text", "body": text}, sender=sender, **kw
        )


def _persist(db: Database, max_delta_chain: int = 50) -> EventPersistStore:
    hooks: list[PersistHook] = [StateGroupPersistHook(max_delta_chain)]
    return EventPersistStore(db, hooks=hooks)


async def _groups(db: Database) -> list[tuple[int, int | None, int, int]]:
    """(id, prev_group, chain_length, entry count) of every group, by id."""
    rows = await db.select(
        "test_groups",
        "SELECT g.id, g.prev_group, g.chain_length,"
        " (SELECT COUNT(*) FROM state_group_entries e WHERE e.state_group = g.id)"
        " FROM state_groups g ORDER BY g.id",
    )
    return [(int(a), None if b is None else int(b), int(c), int(d)) for a, b, c, d in rows]


async def _assert_matches_replay(store: StateStore, room: Room) -> None:
    for event_id, expected in room.after.items():
        assert await store.get_state_ids_after(event_id) == expected, event_id
        assert await store.get_state_ids_before(event_id) == room.before[event_id], event_id


# ------------------------------------------------------------------- linear room --


@pytest_twisted.ensureDeferred
async def test_linear_room_state_after_and_before(db: Database) -> None:
    room = Room(_persist(db), [0])
    await room.create()
    create = room.events[0]
    m1 = await room.message("hello")
    bob_join = await room.member(BOB)
    m2 = await room.message("from bob", sender=BOB)
    topic = await room.topic("first")
    topic2 = await room.topic("second")
    bob_leave = await room.member(BOB, "leave")
    m3 = await room.message("after")

    store = StateStore(db)
    await _assert_matches_replay(store, room)
    # A fresh store (nothing cached) answers the same.
    await _assert_matches_replay(StateStore(db), room)

    assert await store.get_state_ids_before(create.event_id) == {}
    assert await store.get_state_ids_after(create.event_id) == {
        ("m.room.create", ""): create.event_id
    }
    after_bob = await store.get_state_ids_after(bob_join.event_id)
    assert after_bob[("m.room.member", BOB)] == bob_join.event_id
    assert ("m.room.member", BOB) not in await store.get_state_ids_before(bob_join.event_id)
    assert (await store.get_state_ids_before(topic2.event_id))[
        ("m.room.topic", "")
    ] == topic.event_id
    assert (await store.get_state_ids_after(m3.event_id))[
        ("m.room.member", BOB)
    ] == bob_leave.event_id

    # A message shares the group of the event before it; each state event has its own.
    g = store.get_state_group_for_event
    assert await g(m1.event_id) == await g(room.events[3].event_id)
    assert await g(m2.event_id) == await g(bob_join.event_id)
    assert await g(topic.event_id) != await g(m2.event_id)
    assert (
        len({await g(e.event_id) for e in room.events}) == 8
    )  # create..join_rules, bob, 2 topics, leave
    assert await g("$unknown") is None
    with pytest.raises(StateNotFoundError):
        await store.get_state_ids_after("$unknown")
    with pytest.raises(StateNotFoundError):
        await store.get_state_ids_before("$unknown")

    # Each state change on the linear DAG wrote exactly one delta row (no full copies).
    groups = await _groups(db)
    assert [(chain, count) for _, _, chain, count in groups] == [(i, 1) for i in range(8)]

    many = await store.get_state_ids_after_many(
        [e.event_id for e in room.events] + ["$unknown", m1.event_id]
    )
    assert many == room.after


@pytest_twisted.ensureDeferred
async def test_registered_hook_maps_events_persisted_by_default(db: Database) -> None:
    """Importing the module registers the hook; EventPersistStore(db) runs it."""
    assert STATE_PERSIST_HOOK in PERSIST_HOOKS
    room = Room(EventPersistStore(db), [0])
    await room.create()
    await room.member(BOB)
    await room.message("hi")
    await _assert_matches_replay(StateStore(db), room)


# ------------------------------------------------------------------- chain bound --


@pytest_twisted.ensureDeferred
async def test_chain_bound_starts_a_new_snapshot(db: Database) -> None:
    room = Room(_persist(db, max_delta_chain=3), [0])
    await room.create()  # 4 state events: snapshot + 3 deltas
    for i in range(9):
        await room.member(f"@u{i}:{SERVER}")
        await room.message(f"m{i}")

    groups = await _groups(db)
    assert [chain for _, _, chain, _ in groups] == [0, 1, 2, 3] * 3 + [0]
    by_id = {gid: (prev, chain, count) for gid, prev, chain, count in groups}
    state_sizes = [len(room.after[e.event_id]) for e in room.events if e.state_key is not None]
    for (gid, prev, chain, count), size in zip(groups, state_sizes, strict=True):
        if chain == 0:
            # A snapshot holds the whole state after its event, and has no parent.
            assert prev is None and count == size
        else:
            assert prev is not None and by_id[prev][1] == chain - 1 and count == 1
        assert gid > (prev or 0)

    await _assert_matches_replay(StateStore(db), room)


@pytest_twisted.ensureDeferred
async def test_state_identical_whichever_group_and_cache(db: Database) -> None:
    """Every group of a chain answers the replayed state, cold, warm, or partly cached."""
    room = Room(_persist(db, max_delta_chain=4), [0])
    await room.create()
    for i in range(12):
        await room.member(f"@u{i}:{SERVER}")
        if i % 3 == 0:
            await room.topic(f"t{i}")
        await room.member(f"@u{i // 2}:{SERVER}", "leave")
    state_events = [e for e in room.events if e.state_key is not None]
    ids = [e.event_id for e in state_events]

    for warm_index in [None, 0, 3, len(ids) // 2, len(ids) - 1]:
        store = StateStore(db)
        if warm_index is not None:
            # Cache one group first; walks from later groups stop there.
            await store.get_state_ids_after(ids[warm_index])
        for event_id in ids:
            assert await store.get_state_ids_after(event_id) == room.after[event_id]
        # Asked again, from the cache, the answers are unchanged (and copies).
        answer = await store.get_state_ids_after(ids[-1])
        answer[("x", "y")] = "$mutated"
        assert await store.get_state_ids_after(ids[-1]) == room.after[ids[-1]]

    # A tiny cache (evicting constantly) answers the same, individually and in bulk.
    tiny = StateStore(db, max_cached_entries=8, event_cache_size=3)
    assert await tiny.get_state_ids_after_many(ids) == {e: room.after[e] for e in ids}
    for event_id in reversed(ids):
        assert await tiny.get_state_ids_after(event_id) == room.after[event_id]
    assert tiny._cached_entries <= 8


# ---------------------------------------------------------------------- filters --


@pytest_twisted.ensureDeferred
async def test_types_filtering(db: Database) -> None:
    room = Room(_persist(db, max_delta_chain=2), [0])
    await room.create()
    bob = await room.member(BOB)
    await room.member(CAROL)
    topic = await room.topic("t")
    await room.member(CAROL, "leave")
    last = await room.message("end")
    full = room.after[last.event_id]
    members = {k: v for k, v in full.items() if k[0] == "m.room.member"}
    assert len(members) == 3

    cases: list[tuple[list[tuple[str, str | None]], dict[StateKey, str]]] = [
        ([("m.room.member", None)], members),
        ([("m.room.member", BOB)], {("m.room.member", BOB): bob.event_id}),
        ([("m.room.member", BOB), ("m.room.topic", "")], {
            ("m.room.member", BOB): bob.event_id, ("m.room.topic", ""): topic.event_id,
        }),
        ([("m.room.member", BOB), ("m.room.member", None)], members),
        ([("m.room.name", None), ("m.room.member", "@nobody:hs.test")], {}),
        ([], {}),
        # More terms than go into SQL: filtered in Python, same answer.
        ([("m.room.member", f"@x{i}:{SERVER}") for i in range(60)] + [("m.room.topic", None)],
         {("m.room.topic", ""): topic.event_id}),
    ]  # fmt: skip
    for types, expected in cases:
        # Cold (filter pushed into SQL), then warm (filter over the cached full state).
        cold = StateStore(db)
        assert await cold.get_state_ids_after(last.event_id, types) == expected, types
        assert await cold.get_state_ids_after_many([last.event_id], types) == {
            last.event_id: expected
        }
        warm = StateStore(db)
        assert await warm.get_state_ids_after(last.event_id) == full
        assert await warm.get_state_ids_after(last.event_id, types) == expected, types

    before_bob = await StateStore(db).get_state_ids_before(bob.event_id, [("m.room.member", None)])
    assert before_bob == {("m.room.member", ALICE): room.events[1].event_id}


# ------------------------------------------------------------------------ forks --


@pytest_twisted.ensureDeferred
async def test_fork_is_resolved_with_state_resolution(db: Database) -> None:
    """Two branches change state differently; an event merging them sees the resolved state."""
    room = Room(_persist(db, max_delta_chain=50), [0])
    await room.create()
    await room.member(BOB)
    base = room.extremities[0]
    base_state = dict(room.state)

    # Branch A: a topic and Carol's join. Branch B: another topic and Bob's leave. Both
    # branches end with a message (which adds no state).
    a1 = await room.topic("from A", prev=[base])
    a2 = await room.member(CAROL, prev=[a1.event_id])
    a3 = await room.message("on A", prev=[a2.event_id])
    b1 = await room.topic("from B", prev=[base])
    b2 = await room.member(BOB, "leave", prev=[b1.event_id])
    b3 = await room.message("on B", prev=[b2.event_id])
    state_a = {
        **base_state,
        ("m.room.topic", ""): a1.event_id,
        ("m.room.member", CAROL): a2.event_id,
    }
    state_b = {**base_state, ("m.room.topic", ""): b1.event_id, ("m.room.member", BOB): b2.event_id}

    store = StateStore(db)
    assert await store.get_state_ids_after(a3.event_id) == state_a
    assert await store.get_state_ids_after(b3.event_id) == state_b

    expected = resolve_state(RV, [state_a, state_b], room.by_id)
    # Sanity: the resolution is a real merge of both sides.
    assert expected[("m.room.member", CAROL)] == a2.event_id
    assert expected[("m.room.member", BOB)] == b2.event_id
    assert expected[("m.room.topic", "")] in (a1.event_id, b1.event_id)

    # A message merging the fork: before == after == the resolved state.
    merge = await room.message("merge", prev=[a3.event_id, b3.event_id])
    assert await store.get_state_ids_before(merge.event_id) == expected
    assert await store.get_state_ids_after(merge.event_id) == expected
    merge_group = await store.get_state_group_for_event(merge.event_id)
    assert merge_group not in (
        await store.get_state_group_for_event(a3.event_id),
        await store.get_state_group_for_event(b3.event_id),
    )

    # A state event merging the same fork (order of prev_events reversed): before is the
    # resolved state, after adds the event itself.
    new_topic = await room.topic("merged", prev=[b3.event_id, a3.event_id])
    assert await StateStore(db).get_state_ids_before(new_topic.event_id) == expected
    assert await StateStore(db).get_state_ids_after(new_topic.event_id) == {
        **expected, ("m.room.topic", ""): new_topic.event_id,
    }  # fmt: skip
    # The resolved state was stored as a delta on one side, not as a new snapshot.
    groups = {gid: (prev, chain, count) for gid, prev, chain, count in await _groups(db)}
    assert merge_group is not None
    prev, chain, count = groups[merge_group]
    assert prev is not None and chain > 0 and count <= 2

    # Branches that changed no state merge into the group they share: nothing is resolved.
    c1 = await room.message("c1", prev=[merge.event_id])
    c2 = await room.message("c2", prev=[merge.event_id])
    joined = await room.message("joined", prev=[c1.event_id, c2.event_id])
    assert await store.get_state_group_for_event(joined.event_id) == merge_group


@pytest_twisted.ensureDeferred
async def test_fork_resolution_with_a_snapshot_bound(db: Database) -> None:
    """When both sides' chains are full, the resolved state is stored as a snapshot."""
    room = Room(_persist(db, max_delta_chain=1), [0])
    await room.create()
    base = room.extremities[0]
    a = await room.member(BOB, prev=[base])
    a2 = await room.topic("A", prev=[a.event_id])
    b = await room.member(CAROL, prev=[base])
    b2 = await room.topic("B", prev=[b.event_id])
    state_a, state_b = room.after[a2.event_id], room.after[b2.event_id]
    assert state_a[("m.room.member", BOB)] == a.event_id
    assert state_b[("m.room.member", CAROL)] == b.event_id
    merge = await room.message("m", prev=[a2.event_id, b2.event_id])
    expected = resolve_state(RV, [state_a, state_b], room.by_id)
    store = StateStore(db)
    assert await store.get_state_ids_after(merge.event_id) == expected
    group = await store.get_state_group_for_event(merge.event_id)
    groups = {gid: (prev, chain, count) for gid, prev, chain, count in await _groups(db)}
    assert groups[group] == (None, 0, len(expected))  # type: ignore[index]


@pytest_twisted.ensureDeferred
async def test_fork_resolution_can_remove_a_key(db: Database) -> None:
    """The resolved state may lack a key one side has: stored as a delta with a removal."""
    room = Room(_persist(db), [0])
    await room.create()
    base = room.extremities[0]
    # A closes the room and sets a topic; B lets Carol in (allowed while it was public)
    # and sets more state. Resolution applies A's join rules first, so Carol's join fails.
    a1 = await room.send("m.room.join_rules", {"join_rule": "invite"}, state_key="", prev=[base])
    a2 = await room.topic("A", prev=[a1.event_id])
    b = await room.member(CAROL, prev=[base])
    for kind in ("m.room.name", "m.room.avatar", "org.example.x", "org.example.y"):
        b = await room.send(kind, {"v": kind}, state_key="", prev=[b.event_id])
    expected = resolve_state(RV, [room.after[a2.event_id], room.after[b.event_id]], room.by_id)
    assert ("m.room.member", CAROL) in room.after[b.event_id]
    assert ("m.room.member", CAROL) not in expected

    merge = await room.message("m", prev=[a2.event_id, b.event_id])
    store = StateStore(db)
    assert await store.get_state_ids_after(merge.event_id) == expected
    group = await store.get_state_group_for_event(merge.event_id)
    removals = await db.select(
        "test_removals",
        "SELECT type, state_key FROM state_group_entries"
        " WHERE state_group = ? AND event_id IS NULL",
        (group,),
    )
    assert removals == [("m.room.member", CAROL)]
    # Reading it through a cached parent applies the removal too.
    warm = StateStore(db)
    await warm.get_state_ids_after(b.event_id)
    assert await warm.get_state_ids_after(merge.event_id) == expected


# ------------------------------------------------------------------ edge cases --


@pytest_twisted.ensureDeferred
async def test_events_from_before_state_groups_and_rejected_events(db: Database) -> None:
    """Events persisted without the hook (before migration 0002) have no state; the first
    event after them starts a snapshot from the room's current state."""
    stream = [0]
    old_room = Room(EventPersistStore(db, hooks=[]), stream)
    await old_room.create()
    old_msg = await old_room.message("old")
    old_room.persist = _persist(db)
    new_msg = await old_room.message("new")
    dave = await old_room.member("@dave:hs.test")

    store = StateStore(db)
    assert await store.get_state_group_for_event(old_msg.event_id) is None
    with pytest.raises(StateNotFoundError):
        await store.get_state_ids_after(old_msg.event_id)
    assert await store.get_state_ids_after_many([old_msg.event_id, new_msg.event_id]) == {
        new_msg.event_id: old_room.after[new_msg.event_id]
    }
    assert await store.get_state_ids_after(dave.event_id) == old_room.after[dave.event_id]

    # A rejected state event leaves the state as it was.
    rejected = old_room.build("m.room.topic", {"topic": "nope"}, state_key="")
    rejected.rejected = True
    await old_room.store(rejected)
    assert await store.get_state_ids_after(rejected.event_id) == old_room.after[dave.event_id]
    assert await store.get_state_ids_before(rejected.event_id) == old_room.after[dave.event_id]


# -------------------------------------------------------------- property test --

_STATE_KEYS = [
    ("m.room.topic", ""),
    ("m.room.name", ""),
    ("m.room.member", BOB),
    ("m.room.member", CAROL),
    ("org.example.thing", "a"),
    ("org.example.thing", "b"),
]
_STEP = st.one_of(st.none(), st.sampled_from(_STATE_KEYS))


@pytest.mark.timeout(600)
@pytest_twisted.ensureDeferred
async def test_state_after_each_event_equals_naive_replay(db: Database) -> None:
    """Random sequences of state changes and messages, random chain bounds: the state
    before and after every event equals the naive replay."""

    async def run(steps: list[StateKey | None], max_delta_chain: int) -> None:
        last = await db.select("test_max", "SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
        room = Room(_persist(db, max_delta_chain), [int(last[0][0])])
        await room.create()
        for i, step in enumerate(steps):
            if step is None:
                await room.message(f"m{i}")
            elif step[0] == "m.room.member":
                await room.member(step[1], "join" if i % 2 else "leave")
            else:
                await room.send(step[0], {"n": i}, state_key=step[1])
        await _assert_matches_replay(StateStore(db, max_cached_entries=10), room)
        assert await StateStore(db).get_state_ids_after_many(list(room.after)) == room.after
        # Every group respects the bound.
        chains = await db.select(
            "test_chain",
            "SELECT MAX(chain_length) FROM state_groups WHERE room_id = ?",
            (room.room_id,),
        )
        assert int(chains[0][0]) <= max_delta_chain

    # Hypothesis drives the examples from a thread (it cannot await); each example runs
    # on the reactor, where the store's Deferreds live.
    @settings(max_examples=25, deadline=None)
    @given(steps=st.lists(_STEP, max_size=25), max_delta_chain=st.integers(0, 4))
    def check(steps: list[StateKey | None], max_delta_chain: int) -> None:
        def start() -> defer.Deferred[None]:
            return defer.ensureDeferred(run(steps, max_delta_chain))

        # (mypy cannot solve the union in blockingCallFromThread's signature)
        threads.blockingCallFromThread(reactor, start)  # type: ignore[arg-type]

    await threads.deferToThread(check)
