"""The writer side of the non-event streams, with a fake clock: positions become visible in
order, typing changes take positions and expire, and followers mirror the writer's rows."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from homeserver.handlers.stream_writer import StreamWriter
from homeserver.handlers.typing import TypingState, TypingWriter
from homeserver.notifier import Notifier
from replication.streams import StreamIdGenerator, StreamPositionTracker


def _writer(clock: Clock, start: int = 0) -> tuple[StreamWriter, list[int]]:
    published: list[int] = []
    tracker = StreamPositionTracker("typing", "main", clock, start)
    return StreamWriter("typing", StreamIdGenerator(start), tracker, published.append), published


def _done(d: defer.Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addCallback(out.append)
    return out


def test_a_later_write_is_visible_only_once_the_earlier_one_finishes() -> None:
    clock = Clock()
    writer, published = _writer(clock)
    gate: defer.Deferred[None] = defer.Deferred()
    woken: list[str] = []

    async def slow(pos: int) -> int:
        await gate
        return pos

    async def fast(pos: int) -> int:
        return pos

    first = _done(defer.ensureDeferred(writer.write(slow, lambda: woken.append("slow"))))
    second = _done(defer.ensureDeferred(writer.write(fast, lambda: woken.append("fast"))))
    # The fast write finished, but position 1 is still being written: nothing visible.
    assert (first, second, woken, published, writer.tracker.position) == ([], [], [], [], 0)
    gate.callback(None)
    assert first == [(1, 1)] and second == [(2, 2)]
    assert woken == ["slow", "fast"]
    assert published == [2] and writer.tracker.position == 2


def test_a_failed_write_wakes_no_one_but_does_not_block_the_stream() -> None:
    clock = Clock()
    writer, published = _writer(clock, start=5)

    async def boom(pos: int) -> None:
        raise ValueError("no")

    failures: list[Any] = []
    defer.ensureDeferred(writer.write(boom, lambda: failures.append("woken"))).addErrback(
        failures.append
    )
    assert len(failures) == 1 and failures[0].check(ValueError)
    assert published == [6] and writer.tracker.position == 6


def _typing(clock: Clock, max_timeout_ms: int = 30_000) -> tuple[TypingWriter, Notifier]:
    notifier = Notifier(clock)
    writer, _ = _writer(clock, start=1000)
    return TypingWriter(notifier, writer, clock, max_timeout_ms, epoch=1000), notifier


def test_typing_takes_positions_wakes_the_room_and_expires() -> None:
    clock = Clock()
    typing, notifier = _typing(clock)
    listener = notifier.listen("@b:hs", ["!r:hs"])
    woken = _done(listener.wait(60))
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", True, 5_000))
    assert typing.rooms["!r:hs"].user_ids == ("@a:hs",) and typing.rooms["!r:hs"].pos == 1001
    assert woken == [True]

    # A refresh moves the expiry only.
    clock.advance(4)
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", True, 5_000))
    assert typing.rooms["!r:hs"].pos == 1001
    clock.advance(4.5)
    assert typing.typing_in("!r:hs") == ("@a:hs",)
    clock.advance(1)
    assert typing.rooms["!r:hs"].user_ids == () and typing.rooms["!r:hs"].pos == 1002
    assert clock.getDelayedCalls() == []


def test_typing_timeouts_are_capped() -> None:
    clock = Clock()
    typing, _ = _typing(clock, max_timeout_ms=2_000)
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", True, 3_600_000))
    clock.advance(2.01)
    assert typing.typing_in("!r:hs") == ()


def test_stopping_clears_and_changes_show_in_sync_windows() -> None:
    clock = Clock()
    typing, _ = _typing(clock)
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", True, 5_000))
    defer.ensureDeferred(typing.set_typing("!s:hs", "@a:hs", True, 5_000))
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", False, 0))
    rooms = ["!r:hs", "!s:hs", "!t:hs"]
    assert typing.changes(rooms, None, 1003, ()) == {"!s:hs": ("@a:hs",)}
    assert typing.changes(rooms, 1001, 1003, ()) == {"!r:hs": (), "!s:hs": ("@a:hs",)}
    assert typing.changes(rooms, 1001, 1002, ()) == {"!s:hs": ("@a:hs",)}
    assert typing.changes(rooms, 1003, 1003, ()) == {}
    assert typing.changes(rooms, 1003, 1003, ("!s:hs",)) == {"!s:hs": ("@a:hs",)}


def test_followers_mirror_the_writer_and_forget_after_a_restart() -> None:
    clock = Clock()
    typing, _ = _typing(clock)
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", True, 5_000))
    defer.ensureDeferred(typing.set_typing("!s:hs", "@b:hs", True, 5_000))

    follower_notifier = Notifier(clock)
    follower = TypingState(follower_notifier)
    listener = follower_notifier.listen("@c:hs", ["!s:hs"])
    woken = _done(listener.wait(60))
    rows = typing.rows(0, 1002)
    assert rows[0] == {"pos": 1000, "reset": True}
    # Applying changes the view and names the changed rooms; waking is the follower's,
    # once its position covers the rows (replication/follower.py).
    assert follower.apply_rows(rows) == {"!r:hs", "!s:hs"}
    assert follower.typing_in("!r:hs") == ("@a:hs",) and follower.typing_in("!s:hs") == ("@b:hs",)
    assert woken == []
    # Incremental: only what changed after the follower's position.
    defer.ensureDeferred(typing.set_typing("!r:hs", "@a:hs", False, 0))
    assert typing.rows(1002, 1003) == [{"pos": 1003, "room_id": "!r:hs", "user_ids": []}]
    assert follower.apply_rows(typing.rows(1002, 1003)) == {"!r:hs"}
    assert follower.typing_in("!r:hs") == ()

    # A new writer (epoch 5000) knows nobody typing: the follower forgets too.
    restarted, _ = _typing(clock)
    restarted.epoch = 5000
    assert follower.apply_rows(restarted.rows(1003, 5000)) == {"!s:hs"}
    assert follower.typing_in("!s:hs") == () and follower.rooms["!s:hs"].pos == 5000
    typing.stop()
