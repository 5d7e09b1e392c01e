"""AuthChainIndex: auth chains, auth difference, contracted edges, conflicted subgraph.

Checked against brute-force definitions on random DAGs, and on long chains for
the absence of recursion limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.state_res import AuthChainIndex, MissingEventsError, resolve_state

RV = KNOWN_ROOM_VERSIONS["10"]
ROOM = "!room:a"


def ev(
    event_id: str,
    auth: Sequence[str] = (),
    *,
    etype: str = "m.room.topic",
    sender: str = "@alice:a",
    state_key: str = "",
    content: Mapping[str, Any] | None = None,
    ts: int = 0,
) -> Event:
    pdu: dict[str, Any] = {
        "type": etype,
        "room_id": ROOM,
        "sender": sender,
        "state_key": state_key,
        "content": dict(content or {}),
        "origin_server_ts": ts,
        "depth": 1,
        "prev_events": list(auth[:1]),
        "auth_events": list(auth),
    }
    return Event(pdu, RV, event_id)


def graph(edges: Mapping[str, Sequence[str]]) -> dict[str, Event]:
    return {e: ev(e, auth) for e, auth in edges.items()}


def brute_chain(edges: Mapping[str, Sequence[str]], starts: Iterable[str]) -> set[str]:
    out: set[str] = set()
    todo = [a for s in starts for a in edges[s]]
    while todo:
        e = todo.pop()
        if e not in out:
            out.add(e)
            todo.extend(edges[e])
    return out


# A small diamond with a tail:  d -> b -> a, d -> c -> a, e -> d
DIAMOND = {"$a": [], "$b": ["$a"], "$c": ["$a"], "$d": ["$b", "$c"], "$e": ["$d", "$b"]}


def test_auth_chain_of_a_diamond() -> None:
    index = AuthChainIndex(graph(DIAMOND))
    assert index.auth_chain(["$e"]) == {"$a", "$b", "$c", "$d"}
    assert index.auth_chain(["$b", "$c"]) == {"$a"}
    assert index.auth_chain(["$d", "$b"]) == {"$a", "$b", "$c"}  # $b reached from $d
    assert index.auth_chain(["$a"]) == set()
    assert index.auth_chain([]) == set()
    # memoized results are not shared mutable state
    index.auth_chain(["$e"]).clear()
    assert index.auth_chain(["$e"]) == {"$a", "$b", "$c", "$d"}


def test_auth_difference_counts_a_state_sets_own_events() -> None:
    index = AuthChainIndex(graph(DIAMOND))
    # chains (own events included): {b, a} and {c, a}
    assert index.auth_difference([{("t", "1"): "$b"}, {("t", "1"): "$c"}]) == {"$b", "$c"}
    # $b and $c are held by the second set and cited by the first set's $d: they
    # are reached by both (chains {d, b, c, a} and {c, b, a}).
    first = {("t", "1"): "$d", ("t", "2"): "$b"}
    second = {("t", "1"): "$c", ("t", "2"): "$b"}
    assert index.auth_difference([first, second]) == {"$d"}
    assert index.auth_difference([first]) == set()
    assert index.auth_difference([]) == set()
    assert index.auth_difference([["$e"], ["$e"]]) == set()


def test_missing_events_are_collected() -> None:
    events = graph({"$b": ["$a"], "$c": ["$x", "$b"], "$d": ["$y"]})
    index = AuthChainIndex(events)
    with pytest.raises(MissingEventsError) as info:
        index.auth_chain(["$c", "$d", "$z"])
    assert info.value.event_ids == {"$a", "$x", "$y", "$z"}
    # Once the events arrive the same index answers (missing events are not cached).
    events.update(graph({"$a": [], "$x": [], "$y": [], "$z": []}))
    assert index.auth_chain(["$c", "$d", "$z"]) == {"$a", "$b", "$x", "$y"}


def test_cycles_terminate() -> None:
    # Malformed input (possible with server-assigned IDs): walks must still end.
    edges = {"$a": ["$c"], "$b": ["$a"], "$c": ["$b"], "$d": ["$c"]}
    index = AuthChainIndex(graph(edges))
    assert index.auth_chain(["$d"]) == {"$a", "$b", "$c"}
    assert index.conflicted_subgraph(["$d", "$a"]) >= {"$d", "$a"}
    assert set(index.condensed_edges(["$a", "$b", "$d"])) == {"$a", "$b", "$d"}


def test_condensed_edges_skip_non_targets() -> None:
    index = AuthChainIndex(graph(DIAMOND))
    edges = index.condensed_edges(["$e", "$a", "$c"])
    assert edges == {"$e": {"$a", "$c"}, "$c": {"$a"}, "$a": frozenset()}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 25))
    edges: dict[str, list[str]] = {}
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=3)) if i else []
        edges[f"$e{i:02d}"] = [f"$e{p:02d}" for p in parents]
    return edges


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_index_matches_brute_force(edges: dict[str, list[str]], data: st.DataObject) -> None:
    ids = sorted(edges)
    index = AuthChainIndex(graph(edges))
    subset = data.draw(st.sets(st.sampled_from(ids), min_size=1))

    assert index.auth_chain(subset) == brute_chain(edges, subset)

    # condensed edges: transitive closure equals reachability among the targets
    condensed = index.condensed_edges(subset)
    for t in subset:
        reach: set[str] = set()
        todo = list(condensed[t])
        while todo:
            x = todo.pop()
            if x not in reach:
                reach.add(x)
                todo.extend(condensed[x])
        assert reach == brute_chain(edges, [t]) & subset

    # conflicted subgraph: events on a path between two members (endpoints included)
    expected = set(subset)
    for x in ids:
        if brute_chain(edges, [x]) & subset and any(x in brute_chain(edges, [c]) for c in subset):
            expected.add(x)
    assert index.conflicted_subgraph(subset) == expected

    # auth difference with own events counted
    sets = data.draw(st.lists(st.sets(st.sampled_from(ids)), min_size=1, max_size=3))
    chains = [brute_chain(edges, s) | s for s in sets]
    assert index.auth_difference(sets) == set().union(*chains) - chains[0].intersection(*chains)


# ---------------------------------------------------------------------------
# Long chains: no recursion, correct results

N = 20_000


def test_long_linear_auth_chain() -> None:
    edges = {f"$e{i}": ([f"$e{i - 1}"] if i else []) for i in range(N)}
    events = graph(edges)
    index = AuthChainIndex(events)

    chain = index.auth_chain([f"$e{N - 1}"])
    assert len(chain) == N - 1
    assert chain == set(edges) - {f"$e{N - 1}"}

    diff = index.auth_difference([[f"$e{N - 1}"], [f"$e{N // 2}"]])
    assert diff == {f"$e{i}" for i in range(N // 2 + 1, N)}

    subgraph = index.conflicted_subgraph([f"$e{N - 1}", "$e0"])
    assert subgraph == set(edges)
    condensed = index.condensed_edges([f"$e{N - 1}", "$e0"])
    assert condensed[f"$e{N - 1}"] == {"$e0"}


def test_resolution_over_a_long_power_levels_mainline() -> None:
    # create, join, then N power-levels events each citing the previous one: a
    # 20k-long auth chain and mainline. Two topics conflict at the end.
    alice = "@alice:a"
    events: dict[str, Event] = {
        "$create": ev("$create", etype="m.room.create", content={"creator": alice}),
    }
    events["$join"] = ev(
        "$join",
        ["$create"],
        etype="m.room.member",
        state_key=alice,
        content={"membership": "join"},
    )
    prev = None
    for i in range(N):
        auth = ["$create", "$join"] + ([prev] if prev else [])
        eid = f"$pl{i}"
        events[eid] = ev(eid, auth, etype="m.room.power_levels", content={"users": {alice: 100}})
        prev = eid
    assert prev is not None
    mid = f"$pl{N // 2}"
    # topic_old cites a power-levels event halfway up the mainline, topic_new the
    # last one; topic_old is later in time but earlier in the mainline.
    events["$topic_old"] = ev("$topic_old", ["$create", "$join", mid], ts=20)
    events["$topic_new"] = ev("$topic_new", ["$create", "$join", prev], ts=10)
    base = {
        ("m.room.create", ""): "$create",
        ("m.room.member", alice): "$join",
        ("m.room.power_levels", ""): prev,
    }
    a = {**base, ("m.room.topic", ""): "$topic_old"}
    b = {**base, ("m.room.topic", ""): "$topic_new"}

    resolved = resolve_state(RV, [a, b], events)
    assert resolved[("m.room.topic", "")] == "$topic_new"

    # A conflicted power-levels chain: one set stuck at the midpoint.
    c = {**base, ("m.room.power_levels", ""): mid}
    resolved = resolve_state(RV, [base, c], events)
    assert resolved[("m.room.power_levels", "")] == prev
