"""Relations, threads, bundled aggregations and redactions over HTTP (one real process,
on SQLite and on PostgreSQL).

Events are read back through the endpoints that serve them with the extras:
GET /relations (children of a parent, each with its own bundle) and GET /threads (thread
roots). To see an arbitrary event served with its bundle, a test makes it the child of an
"anchor" event through a custom relation (org.example.anchor) and lists the anchor's
children. Every test checks at the end that the server logged no internal error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from tests.harness.matrix import MatrixClient, ok, quote, request
from tests.harness.single import SingleServer, single_server

V1 = "/_matrix/client/v1"
ANCHOR = "org.example.anchor"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite3", id="sqlite3"),
        pytest.param("psycopg2", id="psycopg2", marks=pytest.mark.postgres),
    ],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SingleServer]:
    """One `ganglion run` per engine: the relations SQL must work on both."""
    dsn = None
    if request.param == "psycopg2":
        dsn = request.getfixturevalue("pg_server").fresh_database()
    with single_server(tmp_path_factory.mktemp("relations"), postgres_dsn=dsn) as srv:
        assert srv.config["database"]["name"] == request.param
        yield srv


@attrs.define
class Room:
    alice: MatrixClient  # creator (power 100)
    bob: MatrixClient  # member, power 0
    carol: MatrixClient  # member, power 0
    dave: MatrixClient  # never in the room
    room_id: str
    other_room_id: str  # alice's second room


_counter = iter(range(1_000_000))


@pytest.fixture
def room(server: SingleServer) -> Iterator[Room]:
    n = next(_counter)
    alice, bob, carol, dave = (
        server.register(f"{name}{n}") for name in ("alice", "bob", "carol", "dave")
    )
    room_id = ok(alice.create_room(name="relations"))["room_id"]
    for member in (bob, carol):
        ok(alice.call("POST", f"rooms/{quote(room_id)}/invite", {"user_id": member.user_id}))
        ok(member.join(room_id))
    other = ok(alice.create_room(name="other"))["room_id"]
    with server.logs_no_new_errors():
        yield Room(alice, bob, carol, dave, room_id, other)


def send(
    c: MatrixClient, room_id: str, content: dict[str, Any], event_type: str = "m.room.message"
) -> str:
    return str(ok(c.send(room_id, content, event_type))["event_id"])


def text(body: str, **relates_to: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if relates_to:
        content["m.relates_to"] = relates_to
    return content


def edit(target: str, body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"* {body}",
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


def relations(
    c: MatrixClient, room_id: str, event_id: str, *path: str, **params: Any
) -> tuple[int, Any]:
    segments = "".join(f"/{quote(p)}" for p in path)
    return c.call(
        "GET", f"{V1}/rooms/{quote(room_id)}/relations/{quote(event_id)}{segments}", params=params
    )


def threads(c: MatrixClient, room_id: str, **params: Any) -> tuple[int, Any]:
    return c.call("GET", f"{V1}/rooms/{quote(room_id)}/threads", params=params)


def redact(c: MatrixClient, room_id: str, target: str, reason: str = "") -> tuple[int, Any]:
    # Room version 12 (the default): `redacts` lives in the content.
    return c.send(room_id, {"redacts": target, "reason": reason}, "m.room.redaction")


def served(c: MatrixClient, room_id: str, anchor: str, event_id: str) -> dict[str, Any]:
    """The event as served (with bundles etc.) among the children of `anchor`."""
    chunk = ok(relations(c, room_id, anchor, ANCHOR, limit=100))["chunk"]
    found = [e for e in chunk if e["event_id"] == event_id]
    assert len(found) == 1, (event_id, [e["event_id"] for e in chunk])
    return dict(found[0])


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


def _assert_error(result: tuple[int, Any], status: int, errcode: str) -> None:
    got, body = result
    assert (got, body.get("errcode") if isinstance(body, dict) else body) == (status, errcode), body
    assert isinstance(body.get("error"), str)


# ------------------------------------------------------------------------ edits --


def test_edits_bundle_the_most_recent_valid_replacement(room: Room) -> None:
    r, alice, bob = room.room_id, room.alice, room.bob
    anchor = send(alice, r, text("anchor"))
    original = send(alice, r, text("I like cake", rel_type=ANCHOR, event_id=anchor))
    e1 = send(alice, r, edit(original, "I like chocolate cake"))
    e2 = send(alice, r, edit(original, "I really like chocolate cake"))
    # Invalid replacements: another sender, another type, no m.new_content.
    bob_edit = send(bob, r, edit(original, "bob was here"))
    other_type = send(alice, r, edit(original, "typed"), "org.example.other")
    no_new = send(
        alice, r, {"body": "x", "m.relates_to": {"rel_type": "m.replace", "event_id": original}}
    )

    listed = ok(relations(alice, r, original, "m.replace"))["chunk"]
    assert ids(listed) == [no_new, other_type, bob_edit, e2, e1]  # newest first
    by_id = {e["event_id"]: e for e in listed}
    latest = max((e1, e2), key=lambda eid: (by_id[eid]["origin_server_ts"], eid))

    event = served(alice, r, anchor, original)
    # The original's content is left as it was (spec v1.7+); the edit is bundled.
    assert event["content"]["body"] == "I like cake"
    bundled = event["unsigned"]["m.relations"]["m.replace"]
    assert bundled["event_id"] == latest
    assert bundled["content"] == by_id[latest]["content"]
    assert bundled["sender"] == alice.user_id and bundled["type"] == "m.room.message"
    assert set(event["unsigned"]["m.relations"]) == {"m.replace"}

    # An edit of an edit is no edit: the edited edit gets no m.replace bundle.
    send(alice, r, edit(e1, "edit of an edit"))
    e1_served = [
        e for e in ok(relations(alice, r, original, "m.replace"))["chunk"] if e["event_id"] == e1
    ]
    assert "m.replace" not in e1_served[0]["unsigned"].get("m.relations", {})

    # Redacting the most recent edit reverts the bundle to the other one.
    ok(redact(alice, r, latest))
    other = e1 if latest == e2 else e2
    assert (
        served(alice, r, anchor, original)["unsigned"]["m.relations"]["m.replace"]["event_id"]
        == other
    )
    # Redacting every edit leaves nothing to bundle.
    ok(redact(alice, r, other))
    assert "m.relations" not in served(alice, r, anchor, original)["unsigned"]


# ---------------------------------------------------------------------- threads --


def _thread_bundle(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["unsigned"]["m.relations"]["m.thread"])


def test_threads_list_bundles_participation_and_pagination(room: Room) -> None:
    r, alice, bob, carol = room.room_id, room.alice, room.bob, room.carol
    root1 = send(alice, r, text("thread one"))
    b1 = send(bob, r, text("b1", rel_type="m.thread", event_id=root1))
    send(alice, r, text("a1", rel_type="m.thread", event_id=root1))
    root2 = send(carol, r, text("thread two"))
    c1 = send(carol, r, text("c1", rel_type="m.thread", event_id=root2))
    b2 = send(bob, r, text("b2", rel_type="m.thread", event_id=root1))
    # An edit of a thread message is not part of the thread's count.
    b2_edit = send(bob, r, edit(b2, "b2 edited"))

    # Ordered by each thread's latest event: root1 (b2) then root2 (c1).
    chunk = ok(threads(alice, r))["chunk"]
    assert ids(chunk) == [root1, root2]
    t1, t2 = _thread_bundle(chunk[0]), _thread_bundle(chunk[1])
    assert (t1["count"], t1["latest_event"]["event_id"]) == (3, b2)
    assert (t2["count"], t2["latest_event"]["event_id"]) == (1, c1)
    assert t1["current_user_participated"] is True  # alice sent the root (and a1)
    assert t2["current_user_participated"] is False
    # latest_event carries its own bundle: bob's edit of b2.
    assert t1["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == b2_edit
    assert t1["latest_event"]["content"]["body"] == "b2"

    # Participation is per requesting user.
    by_bob = {e["event_id"]: _thread_bundle(e) for e in ok(threads(bob, r))["chunk"]}
    assert by_bob[root1]["current_user_participated"] is True  # replied
    assert by_bob[root2]["current_user_participated"] is False
    assert ids(ok(threads(bob, r, include="participated"))["chunk"]) == [root1]
    assert ids(ok(threads(carol, r, include="participated"))["chunk"]) == [root2]  # root sender
    assert ids(ok(threads(alice, r, include="all"))["chunk"]) == [root1, root2]

    # Pagination: one per page.
    page1 = ok(threads(alice, r, limit=1))
    assert ids(page1["chunk"]) == [root1] and "next_batch" in page1
    page2 = ok(threads(alice, r, limit=1, **{"from": page1["next_batch"]}))
    assert ids(page2["chunk"]) == [root2] and "next_batch" not in page2

    # A new reply moves its thread to the front.
    send(carol, r, text("c2", rel_type="m.thread", event_id=root2))
    assert ids(ok(threads(alice, r))["chunk"]) == [root2, root1]

    # All of a thread through /relations, newest first.
    assert len(ok(relations(alice, r, root1, "m.thread"))["chunk"]) == 3
    # A thread cannot start from an event that itself has a relation.
    _assert_error(bob.send(r, text("nested", rel_type="m.thread", event_id=b1)), 400, "M_UNKNOWN")
    # Someone who was never in the room may not list its threads.
    _assert_error(threads(room.dave, r), 403, "M_FORBIDDEN")


# ------------------------------------------------------------------- references --


def test_references_are_bundled_annotations_are_not(room: Room) -> None:
    r, alice, bob = room.room_id, room.alice, room.bob
    anchor = send(alice, r, text("anchor"))
    parent = send(alice, r, text("parent", rel_type=ANCHOR, event_id=anchor))
    ref1 = send(bob, r, text("one", rel_type="m.reference", event_id=parent))
    ref2 = send(
        alice,
        r,
        {"m.relates_to": {"rel_type": "m.reference", "event_id": parent}},
        "org.example.data",
    )
    send(
        bob,
        r,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "👍"}},
        "m.reaction",
    )

    bundle = served(alice, r, anchor, parent)["unsigned"]["m.relations"]
    assert bundle == {"m.reference": {"chunk": [{"event_id": ref1}, {"event_id": ref2}]}}
    # A redacted reference leaves the aggregation.
    ok(redact(bob, r, ref1))
    bundle = served(alice, r, anchor, parent)["unsigned"]["m.relations"]
    assert bundle == {"m.reference": {"chunk": [{"event_id": ref2}]}}


# ------------------------------------------------- annotations, filters, paging --


def reaction(target: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def test_annotations_filters_and_duplicates(room: Room) -> None:
    r, alice, bob, carol = room.room_id, room.alice, room.bob, room.carol
    msg = send(alice, r, text("react to me"))
    up_bob = send(bob, r, reaction(msg, "👍"), "m.reaction")
    up_carol = send(carol, r, reaction(msg, "👍"), "m.reaction")
    heart = send(bob, r, reaction(msg, "❤️"), "m.reaction")
    reply = send(carol, r, text("ref", rel_type="m.reference", event_id=msg))

    assert ids(ok(relations(alice, r, msg))["chunk"]) == [reply, heart, up_carol, up_bob]
    assert ids(ok(relations(alice, r, msg, "m.annotation"))["chunk"]) == [heart, up_carol, up_bob]
    assert ids(ok(relations(alice, r, msg, "m.annotation", "m.reaction"))["chunk"]) == [
        heart,
        up_carol,
        up_bob,
    ]
    assert ok(relations(alice, r, msg, "m.annotation", "m.room.message"))["chunk"] == []
    assert ids(ok(relations(alice, r, msg, "m.reference"))["chunk"]) == [reply]
    assert ok(relations(alice, r, msg, "m.thread"))["chunk"] == []

    # The same annotation twice from one user is refused; redacting the first allows it.
    _assert_error(bob.send(r, reaction(msg, "👍"), "m.reaction"), 400, "M_DUPLICATE_ANNOTATION")
    ok(redact(bob, r, up_bob))
    assert ids(ok(relations(alice, r, msg, "m.annotation"))["chunk"]) == [heart, up_carol]
    again = send(bob, r, reaction(msg, "👍"), "m.reaction")
    assert ids(ok(relations(alice, r, msg, "m.annotation"))["chunk"])[0] == again


def test_pagination_both_directions_with_from_and_to(room: Room) -> None:
    r, alice = room.room_id, room.alice
    parent = send(alice, r, text("parent"))
    children = [
        send(alice, r, text(f"c{i}", rel_type="m.reference", event_id=parent)) for i in range(5)
    ]

    def walk(direction: str) -> list[list[str]]:
        pages, token = [], None
        while True:
            params: dict[str, Any] = {"dir": direction, "limit": 2}
            if token is not None:
                params["from"] = token
            body = ok(relations(alice, r, parent, **params))
            pages.append(ids(body["chunk"]))
            assert body.get("prev_batch") == token
            token = body.get("next_batch")
            if token is None:
                return pages

    assert walk("b") == [children[4:2:-1], children[2:0:-1], children[0:1]]
    assert walk("f") == [children[0:2], children[2:4], children[4:5]]

    # `to` bounds the range: a forwards token after c1, used as the lower end backwards.
    after_c1 = ok(relations(alice, r, parent, dir="f", limit=2))["next_batch"]
    assert ids(ok(relations(alice, r, parent, to=after_c1))["chunk"]) == children[4:1:-1]
    # ... and as the start forwards.
    assert (
        ids(ok(relations(alice, r, parent, dir="f", **{"from": after_c1}))["chunk"]) == children[2:]
    )
    # A /messages token works as `from` too.
    start = ok(alice.call("GET", f"rooms/{quote(r)}/messages", params={"dir": "b", "limit": 1}))[
        "start"
    ]
    assert ids(ok(relations(alice, r, parent, **{"from": start}))["chunk"]) == children[::-1]


def test_recurse_follows_matching_relations_to_the_configured_depth(room: Room) -> None:
    r, alice = room.room_id, room.alice
    a = send(alice, r, text("a"))
    chain = [a]
    for name in ("b", "c", "d", "e"):
        chain.append(send(alice, r, text(name, rel_type="m.reference", event_id=chain[-1])))
    _, b, c, d, e = chain
    # A grandchild reached only through an annotation.
    x = send(alice, r, reaction(a, "x"), "m.reaction")
    y = send(alice, r, text("y", rel_type="m.reference", event_id=x))

    direct = ok(relations(alice, r, a))
    assert ids(direct["chunk"]) == [x, b] and "recursion_depth" not in direct
    no = ok(relations(alice, r, a, recurse="false"))
    assert ids(no["chunk"]) == [x, b] and no["recursion_depth"] == 1
    deep = ok(relations(alice, r, a, recurse="true"))
    assert ids(deep["chunk"]) == [y, x, d, c, b] and deep["recursion_depth"] == 3
    assert e not in ids(deep["chunk"])
    refs = ok(relations(alice, r, a, "m.reference", recurse="true"))
    assert ids(refs["chunk"]) == [d, c, b]  # y only hangs off the annotation
    paged = ok(relations(alice, r, a, recurse="true", limit=2))
    assert ids(paged["chunk"]) == [y, x]
    rest = ok(relations(alice, r, a, recurse="true", **{"from": paged["next_batch"]}))
    assert ids(rest["chunk"]) == [d, c, b]


# ------------------------------------------------------------------- redactions --


def test_redaction_permissions(room: Room) -> None:
    r, alice, bob, carol = room.room_id, room.alice, room.bob, room.carol
    bobs = send(bob, r, text("bob's"))
    # Without the redact level, another user's event may not be redacted.
    _assert_error(redact(carol, r, bobs), 403, "M_FORBIDDEN")
    _assert_error(redact(carol, r, "$doesnotexist"), 404, "M_NOT_FOUND")
    # A user may redact their own events; the room creator (power 100) anyone's.
    ok(redact(bob, r, bobs))
    carols = send(carol, r, text("carol's"))
    ok(redact(alice, r, carols))


def test_redacted_events_are_served_redacted_with_redacted_because(room: Room) -> None:
    r, alice, bob = room.room_id, room.alice, room.bob
    root = send(alice, r, text("secret root"))
    send(alice, r, edit(root, "edited root"))
    reply = send(bob, r, text("reply", rel_type="m.thread", event_id=root))
    redaction = ok(redact(alice, r, root, "spam"))["event_id"]

    event = ok(threads(bob, r))["chunk"][0]
    assert event["event_id"] == root
    assert event["content"] == {}
    because = event["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction
    assert because["type"] == "m.room.redaction"
    assert because["sender"] == alice.user_id
    assert because["content"] == {"redacts": root, "reason": "spam"}
    # The thread survives its root's redaction; the edit is no longer bundled.
    relations_bundle = event["unsigned"]["m.relations"]
    assert set(relations_bundle) == {"m.thread"}
    assert relations_bundle["m.thread"]["latest_event"]["event_id"] == reply

    # A state event that is also a child, then redacted.
    anchor = send(alice, r, text("anchor"))
    state_id = ok(
        alice.call(
            "PUT",
            f"rooms/{quote(r)}/state/org.example.thing/k",
            {"secret": 1, "m.relates_to": {"rel_type": ANCHOR, "event_id": anchor}},
        )
    )["event_id"]
    assert "redacted_because" not in served(alice, r, anchor, state_id)["unsigned"]
    # Redacting a child breaks its relation to the anchor: it is no longer listed.
    ok(redact(alice, r, state_id))
    assert state_id not in ids(ok(relations(alice, r, anchor))["chunk"])


# -------------------------------------------------------------------- unsigned --


def test_state_events_carry_prev_content_and_membership(room: Room, server: SingleServer) -> None:
    r, alice, bob = room.room_id, room.alice, room.bob
    anchor = send(alice, r, text("anchor"))

    def put_state(c: MatrixClient, value: int) -> str:
        content = {"v": value, "m.relates_to": {"rel_type": ANCHOR, "event_id": anchor}}
        return str(
            ok(c.call("PUT", f"rooms/{quote(r)}/state/org.example.s/key", content))["event_id"]
        )

    first = put_state(alice, 1)
    # A user who joins later sees earlier events with membership "leave".
    erin = MatrixClient(server.base_url)
    ok(erin.register(f"erin{next(_counter)}"))
    ok(alice.call("POST", f"rooms/{quote(r)}/invite", {"user_id": erin.user_id}))
    ok(erin.join(r))
    second = put_state(alice, 2)

    one = served(alice, r, anchor, first)
    assert "replaces_state" not in one["unsigned"] and "prev_content" not in one["unsigned"]
    assert one["unsigned"]["membership"] == "join"
    two = served(alice, r, anchor, second)
    assert two["unsigned"]["replaces_state"] == first
    assert two["unsigned"]["prev_content"] == one["content"]
    assert two["unsigned"]["prev_sender"] == alice.user_id
    # State events get no bundled aggregations.
    assert "m.relations" not in two["unsigned"]

    assert served(erin, r, anchor, first)["unsigned"]["membership"] == "leave"
    assert served(erin, r, anchor, second)["unsigned"]["membership"] == "join"

    # A redacted replaced state event shows its redacted content as prev_content.
    ok(redact(alice, r, first))
    assert served(alice, r, anchor, second)["unsigned"]["prev_content"] == {}

    # transaction_id only for the device that sent it.
    txn_event = ok(alice.send(r, text("mine", rel_type=ANCHOR, event_id=anchor), txn_id="txn-42"))
    mine = served(alice, r, anchor, txn_event["event_id"])
    assert mine["unsigned"]["transaction_id"] == "txn-42"
    assert "transaction_id" not in served(bob, r, anchor, txn_event["event_id"])["unsigned"]


# -------------------------------------------------------------------- bad input --


def test_bad_input_gets_matrix_errors(room: Room, server: SingleServer) -> None:
    r, alice = room.room_id, room.alice
    msg = send(alice, r, text("m"))
    elsewhere = send(alice, room.other_room_id, text("elsewhere"))
    _assert_error(relations(alice, r, msg, dir="x"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, msg, limit="many"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, msg, limit="0"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, msg, **{"from": "nonsense"}), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, msg, to="s99999999999999999999"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, msg, recurse="yes"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, "not-an-event"), 400, "M_INVALID_PARAM")
    _assert_error(relations(alice, r, "$missing"), 404, "M_NOT_FOUND")
    _assert_error(relations(alice, r, elsewhere), 404, "M_NOT_FOUND")
    _assert_error(relations(room.dave, r, msg), 404, "M_NOT_FOUND")
    _assert_error(relations(alice, "no-room", msg), 400, "M_INVALID_PARAM")
    _assert_error(threads(alice, r, include="mine"), 400, "M_INVALID_PARAM")
    _assert_error(threads(alice, r, limit="0"), 400, "M_INVALID_PARAM")
    _assert_error(threads(alice, r, **{"from": "x"}), 400, "M_INVALID_PARAM")
    status, body = request("GET", f"{server.base_url}{V1}/rooms/{quote(r)}/threads")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    # Huge limits are capped, not refused.
    assert ok(relations(alice, r, msg, limit="100000"))["chunk"] == []
    # Nothing above changed the room.
    assert ids(ok(relations(alice, r, msg))["chunk"]) == []


# ------------------------------------------- the other endpoints that serve events --


def test_messages_event_and_context_serve_bundles_and_redactions(room: Room) -> None:
    r, alice, bob, carol = room.room_id, room.alice, room.bob, room.carol
    root = send(alice, r, text("root"))
    root_edit = send(alice, r, edit(root, "root, edited"))
    reply = send(bob, r, text("in thread", rel_type="m.thread", event_id=root))
    ref = send(carol, r, text("ref", rel_type="m.reference", event_id=root))
    victim = send(bob, r, text("to be removed"))
    # PUT /redact: another user without the redact level is refused; the creator is not.
    _assert_error(
        carol.call("PUT", f"rooms/{quote(r)}/redact/{quote(root)}/t1", {}), 403, "M_FORBIDDEN"
    )
    redaction = ok(
        alice.call("PUT", f"rooms/{quote(r)}/redact/{quote(victim)}/t2", {"reason": "spam"})
    )["event_id"]

    def check_root(event: dict[str, Any]) -> None:
        assert event["content"]["body"] == "root"
        bundle = event["unsigned"]["m.relations"]
        assert bundle["m.replace"]["event_id"] == root_edit
        assert bundle["m.thread"]["latest_event"]["event_id"] == reply
        assert bundle["m.thread"]["count"] == 1
        assert bundle["m.thread"]["current_user_participated"] is True  # alice sent the root
        assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}

    def check_victim(event: dict[str, Any]) -> None:
        assert event["content"] == {}
        assert event["unsigned"]["redacted_because"]["event_id"] == redaction
        assert event["unsigned"]["redacted_because"]["content"]["reason"] == "spam"

    chunk = ok(alice.call("GET", f"rooms/{quote(r)}/messages", params={"dir": "b", "limit": 50}))[
        "chunk"
    ]
    by_id = {e["event_id"]: e for e in chunk}
    check_root(by_id[root])
    check_victim(by_id[victim])
    check_root(ok(alice.call("GET", f"rooms/{quote(r)}/event/{quote(root)}")))
    check_victim(ok(bob.call("GET", f"rooms/{quote(r)}/event/{quote(victim)}")))
    context = ok(alice.call("GET", f"rooms/{quote(r)}/context/{quote(root)}", params={"limit": 2}))
    check_root(context["event"])
