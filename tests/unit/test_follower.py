"""StreamFollower: catching a non-writer process up from pushed and polled positions."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from replication.follower import AppliedRows, StreamFollower
from replication.streams import StreamPositionTracker
from replication.wire import PositionMessage

POLL = 0.5


class FakeRows:
    """apply_rows whose calls the test answers by hand (or automatically)."""

    def __init__(self, auto: Callable[[int, int], int] | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.pending: list[defer.Deferred[AppliedRows]] = []
        self.auto = auto

    def __call__(self, after: int, up_to: int) -> defer.Deferred[AppliedRows]:
        self.calls.append((after, up_to))
        if len(self.calls) > 200:
            raise AssertionError("apply_rows called in a loop")
        if self.auto is not None:
            return defer.succeed(AppliedRows(self.auto(after, up_to)))
        d: defer.Deferred[AppliedRows] = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, reached: int) -> None:
        self.pending.pop(0).callback(AppliedRows(reached))

    def fail(self) -> None:
        self.pending.pop(0).errback(RuntimeError("database went away"))


class FakePositions:
    def __init__(self) -> None:
        self.positions: dict[str, int] = {"events": 0}
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> defer.Deferred[dict[str, int]]:
        self.calls += 1
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(dict(self.positions))


def _follower(
    rows: FakeRows, positions: FakePositions | None = None, start: int = 0
) -> tuple[StreamFollower, StreamPositionTracker, Clock]:
    clock = Clock()
    tracker = StreamPositionTracker("events", "main", cast(IReactorTime, clock), start)
    follower = StreamFollower(tracker, rows, positions or FakePositions(), clock, POLL)
    return follower, tracker, clock


def _pos(p: int, stream: str = "events", writer: str = "main") -> PositionMessage:
    return PositionMessage(stream, writer, p)


def test_on_position_applies_rows_and_advances() -> None:
    rows = FakeRows()
    follower, tracker, _ = _follower(rows, start=3)
    follower.on_position(_pos(7))
    assert rows.calls == [(3, 7)]
    assert tracker.writer_position == 7
    assert tracker.position == 3  # not before the rows are applied
    rows.answer(7)
    assert tracker.position == 7


def test_on_position_ignores_other_streams_and_writers() -> None:
    rows = FakeRows()
    follower, tracker, _ = _follower(rows)
    follower.on_position(_pos(7, stream="typing"))
    follower.on_position(_pos(7, writer="other"))
    assert rows.calls == []
    assert tracker.writer_position == 0


def test_stale_position_does_nothing() -> None:
    rows = FakeRows()
    follower, tracker, _ = _follower(rows, start=10)
    follower.on_position(_pos(4))
    follower.on_position(_pos(10))
    assert rows.calls == []
    assert tracker.position == 10


def test_positions_arriving_during_catch_up_are_coalesced() -> None:
    rows = FakeRows()
    follower, tracker, _ = _follower(rows)
    follower.on_position(_pos(5))
    follower.on_position(_pos(6))
    follower.on_position(_pos(9))
    # One catch-up at a time.
    assert rows.calls == [(0, 5)]
    rows.answer(5)
    assert tracker.position == 5
    assert rows.calls == [(0, 5), (5, 9)]
    rows.answer(9)
    assert tracker.position == 9
    assert rows.calls == [(0, 5), (5, 9)]
    assert rows.pending == []


def test_batched_apply_continues_from_reached_position() -> None:
    rows = FakeRows(auto=lambda after, up_to: min(up_to, after + 3))
    follower, tracker, _ = _follower(rows)
    follower.request_catch_up(10)
    assert rows.calls == [(0, 10), (3, 10), (6, 10), (9, 10)]
    assert tracker.position == 10


def test_failed_apply_retries_after_poll_interval() -> None:
    rows = FakeRows()
    follower, tracker, clock = _follower(rows)
    follower.on_position(_pos(4))
    rows.fail()
    assert rows.calls == [(0, 4)]
    clock.advance(POLL - 0.01)
    assert rows.calls == [(0, 4)]
    clock.advance(0.01)
    assert rows.calls == [(0, 4), (0, 4)]
    rows.answer(4)
    assert tracker.position == 4


def test_apply_without_progress_backs_off_instead_of_spinning() -> None:
    # apply_rows may reach less than asked for; reaching nothing at all (the rows are not
    # visible yet) must not turn into a busy loop on the reactor thread.
    answers = iter([0, 0, 4])
    rows = FakeRows(auto=lambda after, up_to: next(answers))
    follower, tracker, clock = _follower(rows)
    follower.request_catch_up(4)
    assert rows.calls == [(0, 4)]
    assert tracker.position == 0
    clock.advance(POLL)
    assert rows.calls == [(0, 4), (0, 4)]
    clock.advance(POLL)
    assert rows.calls == [(0, 4), (0, 4), (0, 4)]
    assert tracker.position == 4


def test_waiters_wake_as_follower_catches_up() -> None:
    rows = FakeRows()
    follower, tracker, _ = _follower(rows)
    results: list[bool] = []
    tracker.wait_for(5, 30).addCallback(results.append)
    follower.on_position(_pos(5))
    assert results == []
    rows.answer(5)
    assert results == [True]


def test_polls_while_redis_is_down() -> None:
    rows = FakeRows(auto=lambda after, up_to: up_to)
    positions = FakePositions()
    follower, tracker, clock = _follower(rows, positions)
    follower.on_redis_disconnected()
    assert positions.calls == 1  # at once
    assert rows.calls == []  # nothing new yet
    positions.positions["events"] = 3
    clock.advance(POLL)
    assert positions.calls == 2
    assert tracker.position == 3
    assert tracker.writer_position == 3
    positions.positions["events"] = 8
    clock.advance(POLL)
    assert positions.calls == 3
    assert rows.calls == [(0, 3), (3, 8)]
    assert tracker.position == 8


def test_second_disconnect_does_not_double_polling() -> None:
    positions = FakePositions()
    follower, _, clock = _follower(FakeRows(auto=lambda a, b: b), positions)
    follower.on_redis_disconnected()
    follower.on_redis_disconnected()
    assert positions.calls == 1
    clock.advance(POLL)
    assert positions.calls == 2


def test_poll_failures_are_swallowed_and_polling_goes_on() -> None:
    rows = FakeRows(auto=lambda after, up_to: up_to)
    positions = FakePositions()
    positions.error = ConnectionRefusedError()
    follower, tracker, clock = _follower(rows, positions)
    follower.on_redis_disconnected()
    clock.advance(POLL)
    assert positions.calls == 2
    positions.error = None
    positions.positions["events"] = 2
    clock.advance(POLL)
    assert positions.calls == 3
    assert tracker.position == 2


def test_poll_without_our_stream_does_nothing() -> None:
    rows = FakeRows()
    positions = FakePositions()
    positions.positions = {"typing": 9}
    follower, tracker, _ = _follower(rows, positions)
    follower.on_redis_disconnected()
    assert positions.calls == 1
    assert rows.calls == []
    assert tracker.writer_position == 0


def test_reconnect_stops_polling_and_polls_once() -> None:
    rows = FakeRows(auto=lambda after, up_to: up_to)
    positions = FakePositions()
    follower, tracker, clock = _follower(rows, positions)
    follower.on_redis_disconnected()
    assert positions.calls == 1
    positions.positions["events"] = 6
    follower.on_redis_connected()
    # The one catch-up poll for whatever was announced while Redis was away.
    assert positions.calls == 2
    assert tracker.position == 6
    clock.advance(POLL * 10)
    assert positions.calls == 2
    assert clock.getDelayedCalls() == []


def test_stop_stops_polling() -> None:
    positions = FakePositions()
    follower, _, clock = _follower(FakeRows(auto=lambda a, b: b), positions)
    follower.on_redis_disconnected()
    follower.stop()
    clock.advance(POLL * 10)
    assert positions.calls == 1
    assert clock.getDelayedCalls() == []


def test_coroutine_apply_rows() -> None:
    clock = Clock()
    tracker = StreamPositionTracker("events", "main", cast(IReactorTime, clock), 0)
    seen: list[tuple[int, int]] = []

    async def apply_rows(after: int, up_to: int) -> AppliedRows:
        seen.append((after, up_to))
        await task.deferLater(cast(IReactorTime, clock), 1.0, lambda: None)
        return AppliedRows(up_to)

    async def fetch() -> dict[str, int]:
        return {}

    follower = StreamFollower(tracker, apply_rows, fetch, clock, POLL)
    follower.on_position(_pos(2))
    assert seen == [(0, 2)]
    follower.on_position(_pos(3))
    clock.advance(1.0)
    assert tracker.position == 2
    assert seen == [(0, 2), (2, 3)]
    clock.advance(1.0)
    assert tracker.position == 3
