"""Notifier and Listener: waking long-polls, with a fake clock."""

from __future__ import annotations

from typing import cast

from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from homeserver.notifier import Notifier
from storage.stores.events import StreamRow


def _msg(room: str, pos: int = 1) -> StreamRow:
    return StreamRow(pos, room, "m.room.message", None, None)


def _member(room: str, user: str, membership: str = "invite", pos: int = 1) -> StreamRow:
    return StreamRow(pos, room, "m.room.member", user, membership)


def _results(d: defer.Deferred[bool]) -> list[bool]:
    out: list[bool] = []
    d.addCallback(out.append)
    return out


def test_event_in_listened_room_wakes_listener() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    listener = n.listen("@a:hs", ["!r1:hs", "!r2:hs"])
    res = _results(listener.wait(30))
    n.on_new_events([_msg("!r2:hs")])
    assert res == [True]
    assert listener.fired
    assert n.listener_count() == 0  # woken listeners are removed
    assert clock.getDelayedCalls() == []  # and their timeout cancelled


def test_event_in_other_room_does_not_wake() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    listener = n.listen("@a:hs", ["!r1:hs"])
    res = _results(listener.wait(30))
    n.on_new_events([_msg("!other:hs")])
    assert res == []
    assert not listener.fired
    assert n.listener_count() == 1


def test_membership_event_about_user_wakes_them_outside_their_rooms() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    listener = n.listen("@a:hs", [])
    bystander = n.listen("@b:hs", [])
    res = _results(listener.wait(30))
    other = _results(bystander.wait(30))
    n.on_new_events([_member("!new:hs", "@a:hs")])
    assert res == [True]
    assert other == []


def test_non_member_state_event_with_user_state_key_does_not_wake_user() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    listener = n.listen("@a:hs", [])
    res = _results(listener.wait(30))
    n.on_new_events([StreamRow(1, "!r:hs", "m.room.power_levels", "@a:hs", None)])
    assert res == []


def test_timeout_answers_false() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    listener = n.listen("@a:hs", ["!r:hs"])
    res = _results(listener.wait(5))
    clock.advance(4.9)
    assert res == []
    clock.advance(0.1)
    assert res == [False]
    # A wake after the timeout does not touch the fired Deferred again.
    n.on_new_events([_msg("!r:hs")])
    assert res == [False]


def test_event_before_wait_is_not_lost() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    listener = n.listen("@a:hs", ["!r:hs"])
    n.on_new_events([_msg("!r:hs")])
    res = _results(listener.wait(30))
    assert res == [True]
    assert clock.getDelayedCalls() == []


def test_close_answers_false_and_unregisters() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    listener = n.listen("@a:hs", ["!r:hs"])
    res = _results(listener.wait(30))
    listener.close()
    assert res == [False]
    assert n.listener_count() == 0
    assert clock.getDelayedCalls() == []
    n.on_new_events([_msg("!r:hs")])
    assert res == [False]
    assert not listener.fired
    # No stale index entries.
    assert n._by_room == {}
    assert n._by_user == {}


def test_close_after_wake_is_harmless() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    listener = n.listen("@a:hs", ["!r:hs"])
    res = _results(listener.wait(30))
    n.on_new_events([_msg("!r:hs")])
    listener.close()
    assert res == [True]


def test_wake_user_wakes_every_listener_of_that_user_only() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    a1 = n.listen("@a:hs", ["!r:hs"])
    a2 = n.listen("@a:hs", [])
    b = n.listen("@b:hs", ["!r:hs"])
    r1, r2, rb = _results(a1.wait(30)), _results(a2.wait(30)), _results(b.wait(30))
    n.wake_user("@a:hs")
    assert (r1, r2, rb) == ([True], [True], [])
    assert n.listener_count() == 1
    n.wake_user("@nobody:hs")
    assert rb == []


def test_one_batch_wakes_each_listener_once() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    listener = n.listen("@a:hs", ["!r1:hs", "!r2:hs"])
    res = _results(listener.wait(30))
    n.on_new_events([_msg("!r1:hs", 1), _msg("!r2:hs", 2), _member("!r3:hs", "@a:hs", pos=3)])
    assert res == [True]
    assert n.listener_count() == 0


def test_many_listeners_in_one_room() -> None:
    n = Notifier(cast(IReactorTime, Clock()))
    listeners = [n.listen(f"@u{i}:hs", ["!r:hs"]) for i in range(20)]
    results = [_results(listener.wait(30)) for listener in listeners]
    assert n.listener_count() == 20
    n.on_new_events([_msg("!r:hs")])
    assert all(r == [True] for r in results)
    assert n.listener_count() == 0


def test_wait_in_coroutine_with_clock() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))

    async def long_poll() -> bool:
        listener = n.listen("@a:hs", ["!r:hs"])
        try:
            return await listener.wait(10)
        finally:
            listener.close()

    first = _results(defer.ensureDeferred(long_poll()))
    clock.advance(3)
    n.on_new_events([_msg("!r:hs")])
    assert first == [True]

    second = _results(defer.ensureDeferred(long_poll()))
    clock.advance(10)
    assert second == [False]
    assert n.listener_count() == 0


def test_wake_room_wakes_listeners_in_that_room_only() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    inside = n.listen("@a:hs", ["!r:hs", "!s:hs"])
    outside = n.listen("@b:hs", ["!s:hs"])
    r_in, r_out = _results(inside.wait(30)), _results(outside.wait(30))
    n.wake_room("!r:hs")
    assert (r_in, r_out) == ([True], [])
    assert n.listener_count() == 1
    assert "!r:hs" not in n._by_room  # the woken listener left every index
    n.wake_room("!nowhere:hs")
    assert r_out == []


def _waiting() -> float:
    value = REGISTRY.get_sample_value("ganglion_sync_waiting_listeners")
    assert value is not None
    return value


def test_waiting_gauge_counts_parked_listeners_until_they_stop_for_any_reason() -> None:
    clock = Clock()
    n = Notifier(cast(IReactorTime, clock))
    base = _waiting()
    woken, timed_out, closed, cancelled = (n.listen(f"@{c}:hs", [f"!{c}:hs"]) for c in "abcd")
    assert _waiting() == base  # listening alone is not waiting: the request still computes
    results = [_results(x.wait(t)) for x, t in ((woken, 30), (timed_out, 5), (closed, 30))]
    pending = cancelled.wait(30)
    pending.addErrback(lambda failure: failure.trap(defer.CancelledError))
    assert _waiting() == base + 4
    n.on_new_events([_msg("!a:hs")])
    assert _waiting() == base + 3
    clock.advance(5)
    assert _waiting() == base + 2
    closed.close()
    assert _waiting() == base + 1
    pending.cancel()  # the client went away
    assert _waiting() == base
    assert results == [[True], [False], [False]]
    assert clock.getDelayedCalls() == []
    # A listener woken before it waits answers at once and is never counted.
    late = n.listen("@e:hs", ["!e:hs"])
    n.on_new_events([_msg("!e:hs")])
    assert _results(late.wait(30)) == [True]
    assert _waiting() == base
