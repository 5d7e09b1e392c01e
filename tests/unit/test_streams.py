"""StreamIdGenerator and StreamPositionTracker."""

from __future__ import annotations

import random
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from replication.streams import StreamIdGenerator, StreamPositionTracker

# -- StreamIdGenerator ---------------------------------------------------------------------


def test_allocate_counts_up_from_current() -> None:
    gen = StreamIdGenerator(10)
    assert gen.current == 10
    assert [gen.allocate() for _ in range(3)] == [11, 12, 13]
    # Allocation alone never moves current.
    assert gen.current == 10


def test_finish_in_order_advances() -> None:
    gen = StreamIdGenerator(0)
    a, b = gen.allocate(), gen.allocate()
    assert gen.finish(a) is True
    assert gen.current == a
    assert gen.finish(b) is True
    assert gen.current == b


def test_finish_out_of_order_waits_for_older_id() -> None:
    gen = StreamIdGenerator(0)
    a, b, c = gen.allocate(), gen.allocate(), gen.allocate()
    assert gen.finish(c) is False
    assert gen.current == 0
    assert gen.finish(b) is False
    assert gen.current == 0
    # Finishing the oldest releases everything finished behind it at once.
    assert gen.finish(a) is True
    assert gen.current == c


def test_allocation_after_partial_finish() -> None:
    gen = StreamIdGenerator(5)
    a = gen.allocate()
    b = gen.allocate()
    gen.finish(b)
    c = gen.allocate()
    assert c == 8
    gen.finish(a)
    assert gen.current == b
    gen.finish(c)
    assert gen.current == c


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.permutations(list(range(n))).map(lambda p: (n, p))
    ),
)
def test_current_never_passes_an_unfinished_id(start: int, case: tuple[int, list[int]]) -> None:
    n, order = case
    gen = StreamIdGenerator(start)
    ids = [gen.allocate() for _ in range(n)]
    assert ids == list(range(start + 1, start + n + 1))
    unfinished = set(ids)
    previous = gen.current
    for index in order:
        pos = ids[index]
        advanced = gen.finish(pos)
        unfinished.discard(pos)
        # Never beyond an unfinished id ...
        if unfinished:
            assert gen.current < min(unfinished)
        # ... as far as it may go ...
        expected = (min(unfinished) - 1) if unfinished else ids[-1]
        assert gen.current == expected
        # ... monotonic, and finish() says whether it moved.
        assert gen.current >= previous
        assert advanced == (gen.current != previous)
        previous = gen.current
    assert gen.current == max(ids)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_interleaved_allocate_and_finish(steps: list[bool], rnd: random.Random) -> None:
    gen = StreamIdGenerator(0)
    in_flight: list[int] = []
    allocated: list[int] = []
    for do_allocate in steps:
        if do_allocate or not in_flight:
            pos = gen.allocate()
            in_flight.append(pos)
            allocated.append(pos)
        else:
            pos = in_flight.pop(rnd.randrange(len(in_flight)))
            gen.finish(pos)
        if in_flight:
            assert gen.current == min(in_flight) - 1
        else:
            assert gen.current == max(allocated)
    for pos in list(in_flight):
        gen.finish(pos)
    assert gen.current == max(allocated)


# -- StreamPositionTracker -----------------------------------------------------------------


def _tracker(position: int = 0, clock: Clock | None = None) -> StreamPositionTracker:
    return StreamPositionTracker("events", "main", cast(IReactorTime, clock or Clock()), position)


def test_advance_moves_forward_only() -> None:
    t = _tracker(5)
    t.advance(3)
    assert t.position == 5
    t.advance(9)
    assert t.position == 9
    assert t.writer_position == 9


def test_saw_writer_position_is_monotonic() -> None:
    t = _tracker(5)
    t.saw_writer_position(10)
    t.saw_writer_position(7)
    assert t.writer_position == 10
    assert t.position == 5


def test_wait_for_already_reached_fires_at_once() -> None:
    clock = Clock()
    t = _tracker(5, clock)
    results: list[bool] = []
    t.wait_for(5, 10).addCallback(results.append)
    t.wait_for(2, 10).addCallback(results.append)
    assert results == [True, True]
    assert clock.getDelayedCalls() == []


def test_wait_for_fires_true_on_advance_and_cancels_timer() -> None:
    clock = Clock()
    t = _tracker(0, clock)
    results: list[bool] = []
    t.wait_for(3, 10).addCallback(results.append)
    assert results == []
    t.advance(2)
    assert results == []
    t.advance(3)
    assert results == [True]
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert results == [True]


def test_wait_for_times_out_false() -> None:
    clock = Clock()
    t = _tracker(0, clock)
    results: list[bool] = []
    t.wait_for(3, 10).addCallback(results.append)
    clock.advance(9.999)
    assert results == []
    clock.advance(0.001)
    assert results == [False]
    # A later advance does not fire the timed-out Deferred again.
    t.advance(5)
    assert results == [False]


def test_waiters_fire_in_position_order_and_only_when_reached() -> None:
    clock = Clock()
    t = _tracker(0, clock)
    fired: list[int] = []

    def record(ok: bool, pos: int) -> None:
        if ok:
            fired.append(pos)

    for pos in (5, 2, 8, 2):
        t.wait_for(pos, 60).addCallback(record, pos)
    t.advance(4)
    assert fired == [2, 2]
    t.advance(7)
    assert fired == [2, 2, 5]
    t.advance(8)
    assert fired == [2, 2, 5, 8]
    assert clock.getDelayedCalls() == []


def test_wait_for_in_coroutine() -> None:
    clock = Clock()
    t = _tracker(0, clock)

    async def waiter() -> tuple[bool, bool]:
        a = await t.wait_for(1, 5)
        b = await t.wait_for(10, 5)
        return a, b

    d = defer.ensureDeferred(waiter())
    results: list[tuple[bool, bool]] = []
    d.addCallback(results.append)
    t.advance(1)
    assert results == []
    clock.advance(5)
    assert results == [(True, False)]


def test_cancelled_waiter_cancels_timer() -> None:
    clock = Clock()
    t = _tracker(0, clock)
    d = t.wait_for(3, 10)
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()
    assert clock.getDelayedCalls() == []
    t.advance(3)  # must not try to fire the cancelled Deferred


def _gauge(name: str, stream: str, writer: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream, "writer": writer})


def test_metrics_track_position_and_lag() -> None:
    t = StreamPositionTracker("test_streams_metrics", "w1", cast(IReactorTime, Clock()), 3)
    assert _gauge("ganglion_replication_stream_position", "test_streams_metrics", "w1") == 3
    t.saw_writer_position(10)
    assert _gauge("ganglion_replication_stream_writer_position", "test_streams_metrics", "w1") == 10
    assert _gauge("ganglion_replication_stream_lag", "test_streams_metrics", "w1") == 7
    t.advance(12)
    assert _gauge("ganglion_replication_stream_position", "test_streams_metrics", "w1") == 12
    assert _gauge("ganglion_replication_stream_lag", "test_streams_metrics", "w1") == 0


@pytest.mark.parametrize("timeout", [0, 0.5])
def test_timeout_boundary(timeout: float) -> None:
    clock = Clock()
    t = _tracker(0, clock)
    results: list[bool] = []
    t.wait_for(1, timeout).addCallback(results.append)
    clock.advance(timeout)
    assert results == [False]
