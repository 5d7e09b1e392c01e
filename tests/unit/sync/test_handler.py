"""SyncHandler against in-memory stores and a fake clock: rooms, sources, tokens, long-polls."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import attrs
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import get_room_version
from homeserver.http.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.streams import STREAM_DEFINITIONS
from homeserver.sync.filters import SyncFilter, parse_sync_filter
from homeserver.sync.handler import SyncHandler, SyncLimits, SyncRequest
from homeserver.sync.sources import SyncContribution, SyncSourceRequest
from homeserver.sync.tokens import StreamToken
from replication.follower import AppliedRows, StreamFollower
from replication.streams import StreamPositionTracker
from replication.wire import PositionMessage
from storage.stores.events import PersistedEvent, StreamRow
from storage.stores.sync import StateEntry, UserMembership

_VERSION = get_room_version("10")
assert _VERSION is not None
VERSION = _VERSION
ALICE, BOB = "@alice:x", "@bob:x"
ROOM = "!room:x"


class World:
    """The events table, and the store methods the handler reads, in memory."""

    def __init__(self) -> None:
        self.events: list[PersistedEvent] = []
        self.membership_reads = 0

    def add(
        self,
        type_: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        room_id: str = ROOM,
    ) -> PersistedEvent:
        pos = len(self.events) + 1
        pdu: dict[str, Any] = {
            "type": type_,
            "sender": sender,
            "room_id": room_id,
            "content": content,
            "origin_server_ts": 1000 + pos,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        pe = PersistedEvent(Event(pdu, VERSION, f"$e{pos}"), pos)
        self.events.append(pe)
        return pe

    # -- EventStore
    async def get_rooms_for_user(self, user_id: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for pe in self.events:
            if pe.event.type == "m.room.member" and pe.event.state_key == user_id:
                out[pe.event.room_id] = str(pe.event.membership)
        return out

    async def get_rooms_changed(self, room_ids: Any, after: int, up_to: int) -> set[str]:
        return {
            pe.event.room_id for pe in self.events if after < pe.stream_ordering <= up_to
        } & set(room_ids)

    async def get_room_events_backwards(
        self, room_id: str, before_or_at: int, after: int, limit: int
    ) -> list[PersistedEvent]:
        found = [
            pe
            for pe in self.events
            if pe.event.room_id == room_id and after < pe.stream_ordering <= before_or_at
        ]
        return list(reversed(found))[:limit]

    async def get_room_events_backwards_many(self, wanted: Any) -> list[list[PersistedEvent]]:
        return [await self.get_room_events_backwards(*args) for args in wanted]

    async def get_events(self, event_ids: Any) -> dict[str, PersistedEvent]:
        wanted = set(event_ids)
        return {pe.event.event_id: pe for pe in self.events if pe.event.event_id in wanted}

    # -- SyncStore
    async def get_membership_history(self, user_id: str, up_to: int) -> list[tuple[str, str, int]]:
        return [
            (pe.event.room_id, str(pe.event.membership), pe.stream_ordering)
            for pe in self.events
            if pe.event.type == "m.room.member"
            and pe.event.state_key == user_id
            and pe.stream_ordering <= up_to
        ]

    async def get_user_memberships(self, user_id: str) -> list[UserMembership]:
        self.membership_reads += 1
        return [
            UserMembership(
                pe.event.room_id, str(pe.event.membership), pe.stream_ordering, pe.event.event_id
            )
            for pe in self.events
            if pe.event.type == "m.room.member" and pe.event.state_key == user_id
        ]

    async def get_state_at_many(self, wanted: Any) -> dict[tuple[str, int], Any]:
        return {(room_id, pos): await self.get_state_at(room_id, pos) for room_id, pos in wanted}

    async def get_last_events_at_many(self, wanted: Any) -> dict[tuple[str, int], Any]:
        found = {key: await self.get_last_event_at(*key) for key in wanted}
        return {key: value for key, value in found.items() if value is not None}

    async def get_state_at(self, room_id: str, pos: int) -> dict[StateKey, StateEntry]:
        out: dict[StateKey, StateEntry] = {}
        for pe in self.events:
            if (
                pe.event.room_id == room_id
                and pe.event.state_key is not None
                and pe.stream_ordering <= pos
            ):
                out[pe.event.key] = StateEntry(
                    pe.event.event_id, pe.stream_ordering, pe.event.membership
                )
        return out

    async def get_last_event_at(self, room_id: str, pos: int) -> tuple[str, int] | None:
        found = [
            pe for pe in self.events if pe.event.room_id == room_id and pe.stream_ordering <= pos
        ]
        return (found[-1].event.event_id, found[-1].stream_ordering) if found else None

    async def get_state_entries(self, event_ids: Any) -> dict[str, StateEntry]:
        return {
            pe.event.event_id: StateEntry(
                pe.event.event_id, pe.stream_ordering, pe.event.membership
            )
            for pe in self.events
            if pe.event.event_id in set(event_ids)
        }

    async def has_member_events_between(self, room_id: str, after: int, up_to: int) -> bool:
        return any(
            pe.event.type == "m.room.member"
            and pe.event.room_id == room_id
            and after < pe.stream_ordering <= up_to
            for pe in self.events
        )


@attrs.define
class FakeSource:
    stream: str
    position: int = 0
    contribution: SyncContribution = attrs.field(factory=SyncContribution)
    fail: bool = False
    seen: list[SyncSourceRequest] = attrs.field(factory=list)
    presence_calls: list[tuple[str, str, str]] = attrs.field(factory=list)

    async def current_position(self) -> int:
        return self.position

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        self.seen.append(req)
        if self.fail:
            raise RuntimeError("source broke")
        return self.contribution


@attrs.define
class PresenceSource(FakeSource):
    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None:
        self.presence_calls.append((user_id, device_id, set_presence))


@attrs.define
class Rig:
    world: World
    clock: Clock
    notifier: Notifier
    tracker: StreamPositionTracker
    handler: SyncHandler
    extras: dict[str, Any]
    writer: dict[str, bool]

    def publish(self) -> None:
        """Makes every stored event visible, as the persister or the follower would."""
        pos = len(self.world.events)
        rows = [
            StreamRow(
                pe.stream_ordering,
                pe.event.room_id,
                pe.event.type,
                pe.event.state_key,
                pe.event.membership,
            )
            for pe in self.world.events
            if pe.stream_ordering > self.tracker.position
        ]
        self.tracker.advance(pos)
        self.notifier.on_new_events(rows)


def make_rig(*, writer: bool = True) -> Rig:
    world = World()
    clock = Clock()
    notifier = Notifier(clock)
    tracker = StreamPositionTracker("events", "main", clock)
    extras: dict[str, Any] = {"sync_sources": []}
    writes = {"events": writer}
    handler = SyncHandler(
        event_store=cast(Any, world),
        sync_store=cast(Any, world),
        notifier=notifier,
        trackers={"events": tracker},
        writes_stream=lambda s: writes.get(s, False),
        clock_ms=lambda: int(clock.seconds() * 1000),
        extras=extras,
        limits=SyncLimits(catch_up_timeout_s=10, unknown_position_wait_s=2),
    )
    return Rig(world, clock, notifier, tracker, handler, extras, writes)


def seed_room(rig: Rig) -> None:
    w = rig.world
    w.add("m.room.create", ALICE, {"creator": ALICE}, "")
    w.add("m.room.member", ALICE, {"membership": "join"}, ALICE)
    w.add("m.room.member", BOB, {"membership": "join"}, BOB)
    rig.publish()


def run(rig: Rig, req: SyncRequest) -> dict[str, Any]:
    d = defer.ensureDeferred(rig.handler.sync(req))
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "sync did not finish"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return cast(dict[str, Any], out[0])


def req(
    since: str | None = None,
    *,
    timeout_ms: int = 0,
    sync_filter: SyncFilter | None = None,
    full_state: bool = False,
    user: str = BOB,
) -> SyncRequest:
    return SyncRequest(
        user,
        "DEV",
        StreamToken.decode(since) if since else None,
        timeout_ms,
        full_state,
        filter=sync_filter or SyncFilter(),
    )


def test_initial_then_incremental_rooms() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    room = first["rooms"]["join"][ROOM]
    assert [e["event_id"] for e in room["timeline"]["events"]] == ["$e1", "$e2", "$e3"]
    assert room["state"]["events"] == [] and not room["timeline"]["limited"]
    assert room["summary"] == {
        "m.heroes": [ALICE],
        "m.joined_member_count": 2,
        "m.invited_member_count": 0,
    }
    assert first["next_batch"] == "s3"

    rig.world.add("m.room.message", ALICE, {"body": "hi"})
    rig.publish()
    second = run(rig, req(first["next_batch"]))
    assert [e["event_id"] for e in second["rooms"]["join"][ROOM]["timeline"]["events"]] == ["$e4"]
    # Unchanged membership: no summary needed.
    assert "summary" not in second["rooms"]["join"][ROOM]
    third = run(rig, req(second["next_batch"]))
    assert third["rooms"]["join"] == {}


def test_gappy_sync_state_is_what_changed_before_the_timeline() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    w = rig.world
    w.add("m.room.message", ALICE, {"body": "1"})
    w.add("m.room.topic", ALICE, {"topic": "new"}, "")
    w.add("m.room.message", ALICE, {"body": "2"})
    w.add("m.room.name", ALICE, {"name": "in timeline"}, "")
    w.add("m.room.message", ALICE, {"body": "3"})
    rig.publish()
    f = parse_sync_filter({"room": {"timeline": {"limit": 2}}})
    second = run(rig, req(first["next_batch"], sync_filter=f))
    room = second["rooms"]["join"][ROOM]
    assert [e["event_id"] for e in room["timeline"]["events"]] == ["$e7", "$e8"]
    assert room["timeline"]["limited"] is True
    assert room["timeline"]["prev_batch"] == "s6"
    assert [e["event_id"] for e in room["state"]["events"]] == ["$e5"]  # the topic, not the name


def test_sources_merge_and_compose_next_batch() -> None:
    rig = make_rig()
    seed_room(rig)
    typing = FakeSource(
        "typing",
        7,
        SyncContribution(
            rooms={ROOM: {"ephemeral": [{"type": "m.typing", "content": {"user_ids": [ALICE]}}]}},
            has_data=True,
        ),
    )
    presence = PresenceSource(
        "presence",
        4,
        SyncContribution(
            global_sections={"presence": [{"type": "m.presence", "sender": ALICE, "content": {}}]}
        ),
    )
    broken = FakeSource("receipts", 9, fail=True)
    rig.extras["sync_sources"].extend([typing, presence, broken])
    out = run(rig, req("s3_2_5_1", full_state=False))
    # receipts stays where the client was, since its source failed.
    assert out["next_batch"] == "s3_7_5_4"
    assert out["rooms"]["join"][ROOM]["ephemeral"]["events"][0]["type"] == "m.typing"
    assert out["presence"]["events"][0]["sender"] == ALICE
    assert presence.presence_calls == [(BOB, "DEV", "online")]
    seen = typing.seen[0]
    assert (seen.since, seen.up_to, seen.joined_room_ids, seen.newly_joined_room_ids) == (
        2,
        7,
        frozenset({ROOM}),
        frozenset(),
    )


def test_future_tokens_are_refused_at_once_on_the_writer() -> None:
    rig = make_rig(writer=True)
    seed_room(rig)
    with pytest.raises(MatrixError) as exc:
        run(rig, req("s99"))
    assert exc.value.errcode == "M_INVALID_PARAM"
    # A stream nothing serves cannot have a position either.
    with pytest.raises(MatrixError):
        run(rig, req("s1_0_0_0_0_0_5"))
    # A source's stream beyond its current position.
    rig.extras["sync_sources"].append(FakeSource("typing", 3))
    with pytest.raises(MatrixError):
        run(rig, req("s1_4"))
    run(rig, req("s1_3"))


def test_follower_waits_briefly_for_catch_up() -> None:
    rig = make_rig(writer=False)
    seed_room(rig)
    rig.world.add("m.room.message", ALICE, {"body": "late"})  # stored, not yet followed
    d = defer.ensureDeferred(rig.handler.sync(req("s4")))
    results: list[Any] = []
    d.addBoth(results.append)
    assert not results
    rig.clock.advance(1)
    rig.publish()
    assert results and isinstance(results[0], dict)

    # Beyond anything the writer announced: 400 after the short wait.
    d2 = defer.ensureDeferred(rig.handler.sync(req("s50")))
    failures: list[Any] = []
    d2.addErrback(failures.append)
    rig.clock.advance(1.9)
    assert not failures
    rig.clock.advance(0.2)
    assert failures and failures[0].value.errcode == "M_INVALID_PARAM"


def test_long_poll_wakes_on_room_event_and_on_source_wakeup() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    d = defer.ensureDeferred(rig.handler.sync(req(first["next_batch"], timeout_ms=30_000)))
    got: list[Any] = []
    d.addBoth(got.append)
    rig.clock.advance(5)
    assert not got
    rig.world.add("m.room.message", ALICE, {"body": "wake"})
    rig.publish()
    assert got and [
        e["content"]["body"] for e in got[0]["rooms"]["join"][ROOM]["timeline"]["events"]
    ] == ["wake"]

    source = FakeSource("account_data", 0)
    rig.extras["sync_sources"].append(source)
    d = defer.ensureDeferred(rig.handler.sync(req(got[0]["next_batch"], timeout_ms=30_000)))
    got2: list[Any] = []
    d.addBoth(got2.append)
    assert not got2
    source.position = 1
    source.contribution = SyncContribution(
        global_sections={"account_data": [{"type": "m.direct", "content": {}}]}, has_data=True
    )
    rig.notifier.wake_user(BOB)
    assert got2 and got2[0]["account_data"]["events"][0]["type"] == "m.direct"
    assert StreamToken.decode(got2[0]["next_batch"]).account_data == 1


def test_long_poll_times_out_empty() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    d = defer.ensureDeferred(rig.handler.sync(req(first["next_batch"], timeout_ms=10_000)))
    got: list[Any] = []
    d.addBoth(got.append)
    rig.clock.advance(9.9)
    assert not got
    rig.clock.advance(0.2)
    assert got and got[0]["rooms"]["join"] == {} and got[0]["next_batch"] == first["next_batch"]
    assert rig.notifier.listener_count() == 0


def test_invite_leave_and_include_leave() -> None:
    rig = make_rig()
    w = rig.world
    w.add("m.room.create", ALICE, {}, "")
    w.add("m.room.member", ALICE, {"membership": "join"}, ALICE)
    w.add("m.room.name", ALICE, {"name": "N"}, "")
    w.add("org.example.private", ALICE, {"secret": 1}, "")
    w.add("m.room.member", ALICE, {"membership": "invite"}, BOB)
    rig.publish()
    first = run(rig, req())
    stripped = first["rooms"]["invite"][ROOM]["invite_state"]["events"]
    assert {(e["type"], e["state_key"]) for e in stripped} == {
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.member", BOB),
    }
    w.add("m.room.member", BOB, {"membership": "leave"}, BOB)  # rejects
    rig.publish()
    second = run(rig, req(first["next_batch"]))
    left = second["rooms"]["leave"][ROOM]
    # Never joined: only their own membership, none of the room's state.
    assert [e["event_id"] for e in left["timeline"]["events"]] == ["$e5", "$e6"]
    assert left["state"]["events"] == []
    assert run(rig, req())["rooms"]["leave"] == {}
    with_leave = run(rig, req(sync_filter=parse_sync_filter({"room": {"include_leave": True}})))
    assert ROOM in with_leave["rooms"]["leave"]


# ------------------------------------------------------ caches and skipped sources

ROOM2 = "!room2:x"


def test_membership_changes_are_seen_on_the_next_sync_despite_the_cache() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    again = run(rig, req(first["next_batch"]))
    assert again["rooms"]["join"] == {}
    assert rig.world.membership_reads == 1  # the second sync used the cached history

    # Bob joins a second room: the next sync shows it, fresh.
    w = rig.world
    w.add("m.room.create", ALICE, {"creator": ALICE}, "", room_id=ROOM2)
    w.add("m.room.member", ALICE, {"membership": "join"}, ALICE, room_id=ROOM2)
    w.add("m.room.member", BOB, {"membership": "join"}, BOB, room_id=ROOM2)
    rig.publish()
    second = run(rig, req(again["next_batch"]))
    assert list(second["rooms"]["join"]) == [ROOM2]
    assert rig.world.membership_reads == 2

    # Bob leaves the first room, and the position moves before the rows reach the
    # notifier (as on the writer): the sync at that position still sees the leave.
    w.add("m.room.member", BOB, {"membership": "leave"}, BOB)
    rig.tracker.advance(len(w.events))
    third = run(rig, req(second["next_batch"]))
    assert list(third["rooms"]["leave"]) == [ROOM]
    assert third["rooms"]["join"] == {}


def test_a_long_poll_listens_to_a_room_joined_since_the_history_was_cached() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    w = rig.world
    w.add("m.room.create", ALICE, {"creator": ALICE}, "", room_id=ROOM2)
    w.add("m.room.member", ALICE, {"membership": "join"}, ALICE, room_id=ROOM2)
    w.add("m.room.member", BOB, {"membership": "join"}, BOB, room_id=ROOM2)
    rig.publish()
    second = run(rig, req(first["next_batch"]))
    d = defer.ensureDeferred(rig.handler.sync(req(second["next_batch"], timeout_ms=30_000)))
    got: list[Any] = []
    d.addBoth(got.append)
    assert not got
    w.add("m.room.message", ALICE, {"body": "in room2"}, room_id=ROOM2)
    rig.publish()
    assert got and list(got[0]["rooms"]["join"]) == [ROOM2]


@attrs.define
class QuietSource(FakeSource):
    quiet_when_unmoved: bool = True


def test_sources_quiet_when_unmoved_are_skipped_only_when_nothing_can_be_new() -> None:
    rig = make_rig()
    seed_room(rig)
    quiet = QuietSource("receipts", 5)
    chatty = FakeSource("typing", 5)
    rig.extras["sync_sources"].extend([quiet, chatty])
    first = run(rig, req())  # initial: both called
    assert (len(quiet.seen), len(chatty.seen)) == (1, 1)
    token = first["next_batch"]
    assert StreamToken.decode(token).receipts == 5

    run(rig, req(token))  # nothing moved: only the source without the promise
    assert (len(quiet.seen), len(chatty.seen)) == (1, 2)
    run(rig, req(token, full_state=True))  # full_state: always called
    assert len(quiet.seen) == 2
    quiet.position = 6  # its stream moved
    out = run(rig, req(token))
    assert len(quiet.seen) == 3
    assert StreamToken.decode(out["next_batch"]).receipts == 6

    # A room joined in the window: called, for the room's full picture.
    w = rig.world
    w.add("m.room.create", ALICE, {"creator": ALICE}, "", room_id=ROOM2)
    w.add("m.room.member", ALICE, {"membership": "join"}, ALICE, room_id=ROOM2)
    w.add("m.room.member", BOB, {"membership": "join"}, BOB, room_id=ROOM2)
    rig.publish()
    run(rig, req(out["next_batch"]))
    assert len(quiet.seen) == 4 and quiet.seen[-1].newly_joined_room_ids == {ROOM2}


def _members(room: dict[str, Any]) -> set[str]:
    return {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}


def test_lazy_loading_sends_heroes_members_only_for_unnamed_rooms() -> None:
    carol, dave = "@carol:x", "@dave:x"
    rig = make_rig()
    w = rig.world
    w.add("m.room.create", ALICE, {"creator": ALICE}, "")
    for user in (ALICE, carol, dave, BOB):
        w.add("m.room.member", user, {"membership": "join"}, user)
    w.add("m.room.message", carol, {"body": "hi"})
    rig.publish()
    lazy = parse_sync_filter(
        {"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}}
    )
    room = run(rig, req(sync_filter=lazy))["rooms"]["join"][ROOM]
    # No name: the heroes are needed, and so are their member events.
    assert room["summary"]["m.heroes"] == [ALICE, carol, dave]
    assert _members(room) == {ALICE, carol, dave, BOB}

    w.add("m.room.name", ALICE, {"name": "Named"}, "")
    w.add("m.room.message", carol, {"body": "named now"})
    rig.publish()
    first = run(rig, req(sync_filter=lazy))
    room = first["rooms"]["join"][ROOM]
    # Named: the senders of the timeline (and the syncing user) only, and no heroes.
    assert room["summary"] == {"m.joined_member_count": 4, "m.invited_member_count": 0}
    assert _members(room) == {carol, BOB}
    # Without lazy loading nothing changes: heroes, and every member.
    full = run(rig, req())["rooms"]["join"][ROOM]
    assert full["summary"]["m.heroes"] == [ALICE, carol, dave]

    # The name is removed: the next sync brings the heroes and their members.
    w.add("m.room.name", ALICE, {"name": ""}, "")
    rig.publish()
    second = run(rig, req(first["next_batch"], sync_filter=lazy))["rooms"]["join"][ROOM]
    assert second["summary"]["m.heroes"] == [ALICE, carol, dave]
    assert _members(second) == {ALICE, dave}  # carol's was sent already


def test_room_events_are_seen_when_the_position_moves_before_the_rows_arrive() -> None:
    rig = make_rig()
    seed_room(rig)
    first = run(rig, req())
    rig.world.add("m.room.message", ALICE, {"body": "early"})
    rig.tracker.advance(len(rig.world.events))  # the notifier has not seen the row yet
    second = run(rig, req(first["next_batch"]))
    events = second["rooms"]["join"][ROOM]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["early"]


# -- a long-poll on a process that follows the events stream ------------------------------


class _StreamRows:
    """The events store's `get_stream_rows`, over the rig's world."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def get_stream_rows(self, after: int, up_to: int, limit: int) -> list[StreamRow]:
        return [
            StreamRow(
                pe.stream_ordering,
                pe.event.room_id,
                pe.event.type,
                pe.event.state_key,
                pe.event.membership,
            )
            for pe in self.world.events
            if after < pe.stream_ordering <= up_to
        ][:limit]


def _following_rig() -> tuple[Rig, StreamFollower]:
    """A rig whose events reach the notifier the way they do on a sync worker: through a
    StreamFollower applying the events stream's rows as each position is announced."""
    rig = make_rig(writer=False)
    seed_room(rig)
    ctx = SimpleNamespace(event_store=_StreamRows(rig.world), notifier=rig.notifier)
    events = STREAM_DEFINITIONS["events"]

    async def apply(after: int, up_to: int) -> AppliedRows:
        return await events.apply_rows(cast(Any, ctx), after, up_to)

    async def no_positions() -> dict[str, int]:
        return {}

    return rig, StreamFollower(rig.tracker, apply, no_positions, rig.clock)


def test_a_long_poll_on_a_follower_wakes_for_a_lone_event() -> None:
    # The woken /sync must read a position that includes what woke it: waking it before
    # the follower's position moved sent it back to sleep until the next event or timeout.
    rig, follower = _following_rig()
    token = run(rig, req())["next_batch"]
    for i in range(200):
        d = defer.ensureDeferred(rig.handler.sync(req(token, timeout_ms=30_000)))
        got: list[Any] = []
        d.addBoth(got.append)
        assert not got
        pe = rig.world.add("m.room.message", ALICE, {"body": f"m{i}"})
        follower.on_position(PositionMessage("events", "main", pe.stream_ordering))
        # No time passes: the event alone must complete the long-poll.
        assert got, f"message {i} did not wake the long-poll"
        events = got[0]["rooms"]["join"][ROOM]["timeline"]["events"]
        assert [e["content"]["body"] for e in events] == [f"m{i}"]
        token = got[0]["next_batch"]
    assert rig.notifier.listener_count() == 0
    assert rig.clock.seconds() == 0


def test_a_follower_wakes_only_after_its_position_covers_the_rows() -> None:
    rig, follower = _following_rig()
    before = rig.tracker.position
    seen_at_wake: list[int] = []
    listener = rig.notifier.listen(BOB, [ROOM])
    listener.wait(60).addCallback(lambda _: seen_at_wake.append(rig.tracker.position))
    pe = rig.world.add("m.room.message", ALICE, {"body": "x"})
    follower.on_position(PositionMessage("events", "main", pe.stream_ordering))
    assert pe.stream_ordering > before
    assert seen_at_wake == [pe.stream_ordering]


@attrs.define
class StuckSource(FakeSource):
    """A source whose read is in flight until the test says otherwise."""

    pending: list[defer.Deferred[None]] = attrs.field(factory=list)

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution:
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        await d
        return self.contribution


def test_a_client_hanging_up_mid_computation_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig()
    seed_room(rig)
    source = StuckSource("account_data")
    rig.extras["sync_sources"].append(source)
    d = defer.ensureDeferred(rig.handler.sync(req()))
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert len(source.pending) == 1
    with caplog.at_level("DEBUG"):
        d.cancel()  # what the HTTP layer does when the client goes away
    # The HTTP layer sees the cancellation itself (it answers nobody), not a wrapper.
    assert len(failures) == 1 and failures[0].check(defer.CancelledError)
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
