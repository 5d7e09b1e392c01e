"""State resolution v1 / v2 / v2.1 on hand-built DAGs, against the real auth rules.

Events are written as PDU dicts with chosen event IDs; auth events are selected
from the state of the fork an event is sent on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.events.auth import AuthError, auth_types_for_event, check_auth_rules
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.state_res import (
    AuthChainIndex,
    MissingEventsError,
    StateMap,
    is_power_event,
    resolve_state,
)

ALICE, BOB, CAROL, DAVE, EVE = "@alice:a", "@bob:b", "@carol:c", "@dave:d", "@eve:e"
CREATE: StateKey = ("m.room.create", "")
PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")
NAME: StateKey = ("m.room.name", "")


def member(user: str) -> StateKey:
    return ("m.room.member", user)


# ---------------------------------------------------------------------------
# A tiny DAG builder (no dependency on the event builder: plain PDU dicts)


@dataclass(frozen=True)
class Fork:
    state: Mapping[StateKey, str]
    heads: tuple[str, ...]


@dataclass
class Room:
    version: str
    events: dict[str, Event] = field(default_factory=dict)
    clock: int = 1_000

    def __post_init__(self) -> None:
        self.rv = KNOWN_ROOM_VERSIONS[self.version]
        self.room_id = "!create" if self.rv.room_id_is_create_event_id else "!room:a"

    def id(self, name: str) -> str:
        return f"${name}" if self.rv.uses_event_id_hash else f"${name}:a"

    def _refs(self, ids: Iterable[str]) -> list[Any]:
        if self.rv.uses_event_id_hash:
            return list(ids)
        return [[i, {"sha256": "aGFzaA"}] for i in ids]

    def make(
        self,
        fork: Fork | None,
        name: str,
        etype: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        ts: int | None = None,
        depth: int | None = None,
        auth: Iterable[str] | None = None,
        rejected: bool = False,
    ) -> Event:
        """An event on ``fork`` (auth events selected from its state), not yet added."""
        if ts is None:
            self.clock += 10
            ts = self.clock
        heads = fork.heads if fork is not None else ()
        if auth is None:
            auth = []
            if fork is not None:
                keys = auth_types_for_event(self.rv, etype, sender, state_key, content)
                auth = [fork.state[k] for k in keys if k in fork.state]
        if depth is None:
            depth = 1 + max((self.events[h].depth for h in heads), default=0)
        pdu: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": dict(content),
            "origin_server_ts": ts,
            "depth": depth,
            "prev_events": self._refs(heads),
            "auth_events": self._refs(auth),
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {},
        }
        if not (self.rv.room_id_is_create_event_id and etype == "m.room.create"):
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if not self.rv.uses_event_id_hash:
            pdu["event_id"] = self.id(name)
        return Event(pdu, self.rv, self.id(name), rejected=rejected)

    def add(self, fork: Fork | None, event: Event) -> Fork:
        self.events[event.event_id] = event
        state = dict(fork.state) if fork is not None else {}
        if event.is_state():
            state[event.key] = event.event_id
        return Fork(state, (event.event_id,))

    def send(
        self,
        fork: Fork | None,
        name: str,
        etype: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        **kwargs: Any,
    ) -> Fork:
        return self.add(fork, self.make(fork, name, etype, sender, content, state_key, **kwargs))

    def pl(self, users: Mapping[str, int], **extra: Any) -> dict[str, Any]:
        if self.rv.creators_have_infinite_power:  # creators may not be listed in v12
            users = {u: v for u, v in users.items() if u != ALICE}
        events = {"m.room.topic": 0, "m.room.name": 0}
        return {"users": dict(users), "events": events, **extra}

    def join(self, fork: Fork, name: str, user: str, **kwargs: Any) -> Fork:
        return self.send(fork, name, "m.room.member", user, {"membership": "join"}, user, **kwargs)

    def resolve(self, *states: StateMap) -> dict[StateKey, str]:
        return resolve_state(self.rv, list(states), self.events)


def base_room(version: str) -> tuple[Room, Fork]:
    """create; alice joins; PL (alice 100, bob 50); public; bob and carol join."""
    room = Room(version)
    create_content: dict[str, Any] = {"room_version": version}
    if not room.rv.implicit_room_creator:
        create_content["creator"] = ALICE
    fork = room.send(None, "create", "m.room.create", ALICE, create_content, "")
    fork = room.join(fork, "alice", ALICE)
    fork = room.send(fork, "pl1", "m.room.power_levels", ALICE, room.pl({ALICE: 100, BOB: 50}), "")
    fork = room.send(fork, "jr1", "m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    fork = room.join(fork, "bob", BOB)
    fork = room.join(fork, "carol", CAROL)
    return room, fork


V2_VERSIONS = ["2", "6", "10", "11", "12"]
ALL_VERSIONS = ["1", *V2_VERSIONS]


def test_base_room_events_pass_the_real_auth_rules() -> None:
    # Guards the builder: every event in the base room is authorised by its auth events.
    for version in ALL_VERSIONS:
        room, fork = base_room(version)
        create = room.events[room.id("create")]
        for event in room.events.values():
            auth_state = {room.events[a].key: room.events[a] for a in event.auth_event_ids}
            auth_state.setdefault(CREATE, create)
            check_auth_rules(event, auth_state)
        assert room.resolve(fork.state) == dict(fork.state)


# ---------------------------------------------------------------------------
# Power events


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_racing_power_level_demotion(version: str) -> None:
    room, start = base_room(version)
    demoted = room.pl({ALICE: 100, BOB: 0})
    # The ban carries the earlier timestamp: only the power ordering puts the
    # demotion (by the more powerful alice) first.
    a = room.send(start, "pl2", "m.room.power_levels", ALICE, demoted, "", ts=5_000)
    b = room.send(start, "ban", "m.room.member", BOB, {"membership": "ban"}, CAROL, ts=4_000)

    resolved = room.resolve(a.state, b.state)

    assert resolved[PL] == room.id("pl2")
    assert resolved[member(CAROL)] == room.id("carol")


@pytest.mark.parametrize("version", V2_VERSIONS)
@pytest.mark.parametrize(("ts_a", "ts_b"), [(8_000, 9_000), (9_000, 8_000), (8_000, 8_000)])
def test_power_ordering_tie_breaks(version: str, ts_a: int, ts_b: int) -> None:
    # alice and bob are both at 100 and each change the power levels concurrently;
    # both changes are allowed, so the one ordered last wins.
    room, start = base_room(version)
    users = {ALICE: 100, BOB: 100}
    fork = room.send(start, "pl_eq", "m.room.power_levels", ALICE, room.pl(users), "")
    a = room.send(
        fork, "pl_a", "m.room.power_levels", ALICE, room.pl(users, events_default=10), "", ts=ts_a
    )
    b = room.send(
        fork, "pl_b", "m.room.power_levels", BOB, room.pl(users, state_default=60), "", ts=ts_b
    )

    resolved = room.resolve(a.state, b.state)

    if room.rv.creators_have_infinite_power:
        expected = "pl_b"  # v12: alice is a creator, always the more powerful
    elif ts_a != ts_b:
        expected = "pl_a" if ts_a > ts_b else "pl_b"  # equal power: earlier ts first
    else:
        expected = "pl_b"  # equal ts: smaller event ID first
    assert resolved[PL] == room.id(expected)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_vs_join_race(version: str) -> None:
    room, start = base_room(version)
    a = room.send(start, "ban", "m.room.member", BOB, {"membership": "ban"}, DAVE, ts=7_000)
    b = room.join(start, "dave", DAVE, ts=6_000)

    resolved = room.resolve(a.state, b.state)

    assert resolved[member(DAVE)] == room.id("ban")


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_join_racing_join_rule_change(version: str) -> None:
    room, start = base_room(version)
    a = room.send(start, "jr2", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", ts=9_000)
    b = room.join(start, "eve", EVE, ts=1_000)

    resolved = room.resolve(a.state, b.state)

    assert resolved[JR] == room.id("jr2")
    # The join was allowed only under the old rule: it is not in the resolved state.
    assert member(EVE) not in resolved
    assert resolved == {**start.state, JR: room.id("jr2")}


def test_v1_join_racing_join_rule_change_keeps_the_join() -> None:
    # v1: a key missing from one state set is not a conflict, so eve's join stays.
    room, start = base_room("1")
    a = room.send(start, "jr2", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", ts=9_000)
    b = room.join(start, "eve", EVE, ts=1_000)

    resolved = room.resolve(a.state, b.state)

    assert resolved[JR] == room.id("jr2")
    assert resolved[member(EVE)] == room.id("eve")


def _promotion_fork(version: str) -> tuple[Room, Fork, Fork]:
    """pl2: alice raises bob to 75. Returns the state before and after it."""
    room, start = base_room(version)
    after = room.send(
        start, "pl2", "m.room.power_levels", ALICE, room.pl({ALICE: 100, BOB: 75}), ""
    )
    return room, start, after


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_difference_events_are_replayed(version: str) -> None:
    # One fork has pl2 then bob's pl3 (which needs bob at 75); the other forked
    # before pl2. pl2 is in the auth difference, not in any state set's values.
    room, start, after = _promotion_fork(version)
    pl3 = room.pl({ALICE: 100, BOB: 75}, state_default=60)
    a = room.send(after, "pl3", "m.room.power_levels", BOB, pl3, "")

    resolved = room.resolve(a.state, start.state)

    # v2: pl1, pl2, pl3 are replayed in order and pl3 stands. v1 only knows pl1 and
    # pl3, and bob at 50 (pl1) may not make pl3's change: a reset to pl1.
    expected = "pl1" if version == "1" else "pl3"
    assert resolved[PL] == room.id(expected)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_v1_stops_at_the_first_unauthorised_power_levels(version: str) -> None:
    room, start, after = _promotion_fork(version)
    pl_bob = room.pl({ALICE: 100, BOB: 75}, state_default=60)
    b = room.send(after, "pl_bob", "m.room.power_levels", BOB, pl_bob, "", ts=50_000)
    c = after
    for i in range(3):  # make alice's change the deepest
        c = room.send(c, f"m{i}", "m.room.message", ALICE, {"body": str(i)})
    pl_alice = room.pl({ALICE: 100, BOB: 75}, events_default=5)
    c = room.send(c, "pl_alice", "m.room.power_levels", ALICE, pl_alice, "", ts=40_000)

    resolved = room.resolve(start.state, b.state, c.state)

    if version == "1":
        # Depth order pl1, pl_bob, pl_alice: pl_bob fails against pl1 and the pass
        # stops there, although pl_alice would have been allowed.
        assert resolved[PL] == room.id("pl1")
    else:
        # pl1, pl2, then alice (100) before bob (75); bob's change is still allowed.
        assert resolved[PL] == room.id("pl_bob")


def test_v1_keeps_a_key_missing_from_one_state_set_even_if_unauthorised() -> None:
    for version, expected in (("1", "t_carol"), ("10", None)):
        room, start = base_room(version)
        a = room.send(start, "t_carol", "m.room.topic", CAROL, {"topic": "c"}, "")
        b = room.send(start, "ban", "m.room.member", BOB, {"membership": "ban"}, CAROL)
        resolved = room.resolve(a.state, b.state)
        assert resolved[member(CAROL)] == room.id("ban")
        assert resolved.get(TOPIC) == (room.id(expected) if expected else None)


def test_v1_other_conflicts_take_the_deepest_authorised_event() -> None:
    room, start = base_room("1")
    start = room.send(start, "t0", "m.room.topic", ALICE, {"topic": "0"}, "")
    a = room.send(start, "m", "m.room.message", CAROL, {"body": "x"})
    a = room.send(a, "t_carol", "m.room.topic", CAROL, {"topic": "c"}, "")
    b = room.send(start, "ban", "m.room.member", BOB, {"membership": "ban"}, CAROL)
    b = room.send(b, "t_alice", "m.room.topic", ALICE, {"topic": "a"}, "")
    assert room.events[room.id("t_carol")].depth == room.events[room.id("t_alice")].depth
    # Same depth: whichever sha1 puts first, carol is banned in R and fails.
    assert room.resolve(a.state, b.state)[TOPIC] == room.id("t_alice")
    c = room.send(start, "m2", "m.room.message", BOB, {"body": "y"})
    c = room.send(c, "m3", "m.room.message", BOB, {"body": "z"})
    c = room.send(c, "t_bob", "m.room.topic", BOB, {"topic": "b"}, "")
    # Deeper and authorised: bob's topic wins over alice's.
    assert room.resolve(c.state, b.state)[TOPIC] == room.id("t_bob")


# ---------------------------------------------------------------------------
# Mainline ordering


def _topic_race(version: str) -> tuple[Room, Fork, Fork]:
    """Fork A: bob's topic on the old power levels, deep in the DAG and late in time.
    Fork B: alice updates the power levels, then bob sets a topic (earlier ts)."""
    room, start = base_room(version)
    a = start
    for i in range(4):
        a = room.send(a, f"msg{i}", "m.room.message", BOB, {"body": str(i)})
    a = room.send(a, "topic_a", "m.room.topic", BOB, {"topic": "A"}, "", ts=50_000)
    b = room.send(start, "pl2", "m.room.power_levels", ALICE, room.pl({ALICE: 100, BOB: 60}), "")
    b = room.send(b, "topic_b", "m.room.topic", BOB, {"topic": "B"}, "", ts=40_000)
    return room, a, b


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_topic_conflict_decided_by_mainline(version: str) -> None:
    room, a, b = _topic_race(version)
    assert room.events[room.id("topic_a")].depth > room.events[room.id("topic_b")].depth

    resolved = room.resolve(a.state, b.state)

    # topic_b cites the newer power levels (mainline position 0), topic_a the older
    # one (position 1): topic_b is applied last and wins despite its earlier ts.
    assert resolved[PL] == room.id("pl2")
    assert resolved[TOPIC] == room.id("topic_b")


def test_v1_topic_conflict_decided_by_depth() -> None:
    room, a, b = _topic_race("1")
    resolved = room.resolve(a.state, b.state)
    assert resolved[PL] == room.id("pl2")
    assert resolved[TOPIC] == room.id("topic_a")


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_same_mainline_position_decided_by_timestamp_then_event_id(version: str) -> None:
    room, start = base_room(version)
    a = room.send(start, "t_x", "m.room.topic", BOB, {"topic": "x"}, "", ts=7_000)
    b = room.send(start, "t_y", "m.room.topic", CAROL, {"topic": "y"}, "", ts=6_000)
    assert room.resolve(a.state, b.state)[TOPIC] == room.id("t_x")

    c = room.send(start, "t_z", "m.room.topic", CAROL, {"topic": "z"}, "", ts=7_000)
    # Same ts as t_x: the larger event ID is ordered last and wins.
    assert room.resolve(a.state, c.state)[TOPIC] == room.id("t_z")


# ---------------------------------------------------------------------------
# v2.1 (room version 12) against v2


def _kick_reset(version: str) -> tuple[Room, dict[StateKey, str], dict[StateKey, str]]:
    """bob kicks carol, and concurrently leaves. One state set merged both; the other
    only has bob's leave."""
    room, start = base_room(version)
    kick = room.send(start, "kick", "m.room.member", BOB, {"membership": "leave"}, CAROL)
    leave = room.send(start, "bob_leave", "m.room.member", BOB, {"membership": "leave"}, BOB)
    merged = {**kick.state, member(BOB): room.id("bob_leave")}
    return room, merged, dict(leave.state)


def test_v2_reauths_conflicted_power_events_against_later_unconflicted_state() -> None:
    room, merged, leave_only = _kick_reset("11")
    resolved = room.resolve(merged, leave_only)
    # v2 starts from the unconflicted state, where bob has already left: the kick
    # fails and carol is "un-kicked".
    assert resolved[member(CAROL)] == room.id("carol")
    assert resolved[member(BOB)] == room.id("bob_leave")


def test_v2_1_starts_iterative_auth_checks_from_empty_state() -> None:
    room, merged, leave_only = _kick_reset("12")
    resolved = room.resolve(merged, leave_only)
    # v2.1 authorises the kick against its own auth events: it stands.
    assert resolved[member(CAROL)] == room.id("kick")
    assert resolved[member(BOB)] == room.id("bob_leave")


def _subgraph_case(version: str) -> tuple[Room, dict[StateKey, str], dict[StateKey, str]]:
    """pl1 -> pl2 (alice raises bob to 75) -> pl3 (bob raises state_default to 60).
    One state set has pl3; the other was reset to pl1 although it holds a join that
    cites pl2, so pl2 is in every auth chain and not in the auth difference."""
    room, start = base_room(version)
    f = room.send(start, "pl2", "m.room.power_levels", ALICE, room.pl({ALICE: 100, BOB: 75}), "")
    f = room.join(f, "dave", DAVE)
    f3 = room.send(
        f,
        "pl3",
        "m.room.power_levels",
        BOB,
        room.pl({ALICE: 100, BOB: 75}, state_default=60),
        "",
    )
    with_pl3 = dict(f3.state)
    reset = {**f.state, PL: room.id("pl1")}
    return room, with_pl3, reset


def test_conflicted_state_subgraph_changes_the_v2_1_result() -> None:
    room, with_pl3, reset = _subgraph_case("12")
    index = AuthChainIndex(room.events)
    assert room.id("pl2") not in index.auth_difference([with_pl3, reset])
    conflicted = {room.id("pl1"), room.id("pl3")}
    # Every path from pl3 down to pl1: via pl2, and via bob's join (which cites pl1
    # directly and through the join rules).
    on_paths = {room.id(n) for n in ("pl2", "bob", "jr1")}
    assert index.conflicted_subgraph(conflicted) == conflicted | on_paths

    # pl2 joins the full conflicted set, so pl3 is checked after it: allowed.
    assert room.resolve(with_pl3, reset)[PL] == room.id("pl3")


@pytest.mark.parametrize("version", ["2", "11"])
def test_without_conflicted_subgraph_v2_resets_power_levels(version: str) -> None:
    room, with_pl3, reset = _subgraph_case(version)
    # v2: pl3 is re-checked against pl1 (bob at 50 may not set 60): rejected.
    assert room.resolve(with_pl3, reset)[PL] == room.id("pl1")


# ---------------------------------------------------------------------------
# Rejected events


def _rejected_auth_case(version: str, *, rejected: bool) -> tuple[Room, StateMap, StateMap]:
    """Two topics; carol's cites a join of hers that may be flagged rejected. Her join
    is in both state sets and cited from both (by her name event), so it is in
    neither the conflicted set nor the auth difference."""
    room, start = base_room(version)
    carol_join = room.events[room.id("carol")]
    room.events[carol_join.event_id] = Event(
        carol_join.pdu, carol_join.room_version, carol_join.event_id, rejected=rejected
    )
    shared = room.send(start, "name", "m.room.name", CAROL, {"name": "n"}, "")
    a = room.send(shared, "t_bob", "m.room.topic", BOB, {"topic": "bob"}, "", ts=7_000)
    b = room.send(shared, "t_carol", "m.room.topic", CAROL, {"topic": "carol"}, "", ts=8_000)
    return room, a.state, b.state


def test_v2_1_ignores_rejected_auth_events_in_iterative_auth_checks() -> None:
    room, a, b = _rejected_auth_case("12", rejected=False)
    assert room.resolve(a, b)[TOPIC] == room.id("t_carol")
    room, a, b = _rejected_auth_case("12", rejected=True)
    # carol's membership is not in the (empty-start) partial state and her only
    # membership auth event was rejected: her topic is not authorised.
    assert room.resolve(a, b)[TOPIC] == room.id("t_bob")


def test_v2_uses_state_over_auth_events_even_if_rejected() -> None:
    # v2 starts from the unconflicted state, which holds carol's join: the rejection
    # flag on an event *in state* does not matter.
    room, a, b = _rejected_auth_case("11", rejected=True)
    assert room.resolve(a, b)[TOPIC] == room.id("t_carol")


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_rejected_conflicted_events_are_handled_as_usual(version: str) -> None:
    room, start = base_room(version)
    a = room.send(start, "t_x", "m.room.topic", BOB, {"topic": "x"}, "", ts=7_000)
    b = room.send(start, "t_y", "m.room.topic", CAROL, {"topic": "y"}, "", ts=8_000, rejected=True)
    assert room.resolve(a.state, b.state)[TOPIC] == room.id("t_y")


# ---------------------------------------------------------------------------
# Misc behaviour


def test_is_power_event() -> None:
    room, start = base_room("10")
    ev = room.make(start, "k", "m.room.member", BOB, {"membership": "leave"}, CAROL)
    assert is_power_event(ev)
    ev = room.make(start, "l", "m.room.member", BOB, {"membership": "leave"}, BOB)
    assert not is_power_event(ev)
    ev = room.make(start, "b", "m.room.member", BOB, {"membership": "ban"}, CAROL)
    assert is_power_event(ev)
    ev = room.make(start, "j", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "")
    assert is_power_event(ev)
    ev = room.make(start, "t", "m.room.topic", ALICE, {"topic": "t"}, "")
    assert not is_power_event(ev)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_events_are_reported(version: str) -> None:
    room, start = base_room(version)
    a = room.send(start, "t_x", "m.room.topic", BOB, {"topic": "x"}, "")
    b = {**start.state, TOPIC: "$nowhere:a"}
    with pytest.raises(MissingEventsError) as info:
        room.resolve(a.state, b)
    assert info.value.event_ids == {"$nowhere:a"}


def test_missing_auth_chain_events_are_reported() -> None:
    room, start = base_room("10")
    a = room.send(start, "t_x", "m.room.topic", BOB, {"topic": "x"}, "")
    b = room.send(start, "t_y", "m.room.topic", BOB, {"topic": "y"}, "")
    del room.events[room.id("pl1")]
    with pytest.raises(MissingEventsError) as info:
        room.resolve(a.state, b.state)
    assert room.id("pl1") in info.value.event_ids


def test_auth_checker_override_is_used() -> None:
    room, start = base_room("10")
    a = room.send(start, "t_x", "m.room.topic", BOB, {"topic": "x"}, "", ts=1)
    b = room.send(start, "t_y", "m.room.topic", BOB, {"topic": "y"}, "", ts=2)
    seen: list[str] = []

    def deny_y(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
        seen.append(event.event_id)
        assert CREATE in auth_state
        if event.event_id == room.id("t_y"):
            raise AuthError("no")

    resolved = resolve_state(room.rv, [a.state, b.state], room.events, auth_checker=deny_y)
    assert resolved[TOPIC] == room.id("t_x")
    assert set(seen) == {room.id("t_x"), room.id("t_y")}


# ---------------------------------------------------------------------------
# Properties: order independence and idempotence on random DAGs

USERS = [ALICE, BOB, CAROL, DAVE]
OPS = ["topic", "name", "pl", "join", "leave", "kick", "ban", "join_rules", "fork", "merge"]


@st.composite
def random_rooms(draw: st.DrawFn) -> tuple[Room, list[dict[StateKey, str]]]:
    version = draw(st.sampled_from(["1", "2", "10", "12"]))
    room, start = base_room(version)
    forks = [start, start]
    create = room.events[room.id("create")]
    for i in range(draw(st.integers(1, 18))):
        op = draw(st.sampled_from(OPS))
        fi = draw(st.integers(0, len(forks) - 1))
        fork = forks[fi]
        if op == "fork":
            forks.append(fork)
            continue
        if op == "merge":
            other = forks[draw(st.integers(0, len(forks) - 1))]
            merged = room.resolve(fork.state, other.state)
            forks[fi] = Fork(merged, tuple(sorted(set(fork.heads) | set(other.heads))))
            continue
        sender = draw(st.sampled_from(USERS))
        target = draw(st.sampled_from(USERS))
        ts = draw(st.integers(0, 4))  # few distinct values: exercise the ID tie-break
        name = f"e{i}"
        if op in ("topic", "name"):
            args: tuple[str, dict[str, Any], str] = (f"m.room.{op}", {op: name}, "")
        elif op == "pl":
            level = draw(st.sampled_from([0, 50, 75, 100]))
            args = ("m.room.power_levels", room.pl({ALICE: 100, BOB: 50, target: level}), "")
        elif op == "join_rules":
            rule = draw(st.sampled_from(["public", "invite"]))
            args = ("m.room.join_rules", {"join_rule": rule}, "")
        else:
            membership = {"kick": "leave"}.get(op, op)
            if op in ("join", "leave"):
                target = sender
            args = ("m.room.member", {"membership": membership}, target)
        event = room.make(fork, name, args[0], sender, args[1], args[2], ts=ts)
        auth_state = {k: room.events[v] for k, v in fork.state.items()}
        auth_state.setdefault(CREATE, create)
        try:
            check_auth_rules(event, auth_state)
        except AuthError:
            continue
        forks[fi] = room.add(fork, event)
    chosen = draw(st.lists(st.sampled_from(forks), min_size=2, max_size=4))
    return room, [dict(f.state) for f in chosen]


def _shuffled(mapping: Mapping[Any, Any], rnd: random.Random) -> dict[Any, Any]:
    items = list(mapping.items())
    rnd.shuffle(items)
    return dict(items)


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(random_rooms(), st.randoms(use_true_random=False))
def test_resolution_is_independent_of_order(
    case: tuple[Room, list[dict[StateKey, str]]], rnd: random.Random
) -> None:
    room, state_sets = case
    expected = resolve_state(room.rv, state_sets, room.events)
    permuted = [_shuffled(s, rnd) for s in state_sets]
    rnd.shuffle(permuted)
    assert resolve_state(room.rv, permuted, _shuffled(room.events, rnd)) == expected
    # Every resolved event is known, and is a state event of the key it sits under.
    for key, event_id in expected.items():
        assert room.events[event_id].key == key


@PROPERTY_SETTINGS
@given(random_rooms())
def test_resolution_is_idempotent(case: tuple[Room, list[dict[StateKey, str]]]) -> None:
    room, state_sets = case
    for state in state_sets:
        assert resolve_state(room.rv, [state], room.events) == state
    resolved = resolve_state(room.rv, state_sets, room.events)
    assert resolve_state(room.rv, [resolved, resolved], room.events) == resolved
    assert resolve_state(room.rv, [resolved], room.events) == resolved
