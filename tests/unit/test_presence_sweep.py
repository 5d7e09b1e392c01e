"""The presence writer's sweep decisions (idle -> unavailable, gone -> offline), on a fake
clock with an in-memory store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.task import Clock

from homeserver.handlers.presence import PresenceWriter, SweepChange
from storage.stores.presence import PresenceRow
from workers.config import PresenceConfig

CONFIG = PresenceConfig(
    idle_timeout_ms=1_000, active_window_ms=500, offline_timeout_ms=3_000, sweep_interval_ms=100
)


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, PresenceRow] = {}

    async def get(self, user_id: str) -> PresenceRow | None:
        return self.rows.get(user_id)

    async def put(
        self, stream_id: int, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> None:
        self.rows[user_id] = PresenceRow(user_id, state, status_msg, last_active_ts, stream_id)

    async def get_present(self) -> list[PresenceRow]:
        return [r for r in self.rows.values() if r.state in ("online", "unavailable")]

    async def get_joined_rooms(self, user_ids: list[str]) -> set[str]:
        return set()


class FakeWriter:
    def __init__(self) -> None:
        self.pos = 0

    async def write(
        self, store: Callable[[int], Awaitable[Any]], on_visible: Callable[[], None] | None = None
    ) -> Any:
        self.pos += 1
        result = await store(self.pos)
        if on_visible is not None:
            on_visible()
        return result, self.pos


class FakeNotifier:
    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake_user(self, user_id: str) -> None:
        self.woken.append(user_id)

    def wake_room(self, room_id: str) -> None:
        pass


def run(coro: Awaitable[Any]) -> Any:
    """Runs a coroutine that never really waits (every fake answers at once)."""
    from twisted.internet import defer

    d: defer.Deferred[Any] = defer.ensureDeferred(coro)  # type: ignore[arg-type]
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the coroutine waited"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def make() -> tuple[PresenceWriter, FakeStore, FakeNotifier, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    store, notifier = FakeStore(), FakeNotifier()
    writer = PresenceWriter(
        store,
        FakeWriter(),
        notifier,  # type: ignore[arg-type]
        lambda: int(clock.seconds() * 1000),
        CONFIG,
        max_sync_ms=60_000,
    )
    return writer, store, notifier, clock


def state(store: FakeStore, user_id: str) -> str:
    return store.rows[user_id].state


def test_idle_online_user_becomes_unavailable_while_still_syncing() -> None:
    writer, store, notifier, clock = make()
    run(writer.on_sync_start("@a:hs", "online"))
    assert state(store, "@a:hs") == "online"
    clock.advance(0.9)
    assert run(writer.sweep()) == 0
    clock.advance(0.2)  # 1.1 s since the last activity; the long-poll is still parked
    notifier.woken.clear()
    assert run(writer.sweep()) == 1
    assert state(store, "@a:hs") == "unavailable"
    assert notifier.woken == ["@a:hs"]
    # Idle, yet syncing: not offline however long the poll is parked (within its lease).
    clock.advance(30)
    assert run(writer.sweep()) == 0
    assert state(store, "@a:hs") == "unavailable"


def test_user_not_syncing_goes_offline_after_the_offline_timeout() -> None:
    writer, store, _, clock = make()
    run(writer.on_sync_start("@a:hs", "online"))
    clock.advance(0.5)
    writer.on_sync_end("@a:hs")
    clock.advance(2.9)  # 2.9 s after the end of the last /sync: idle, not yet gone
    assert writer.sweep_changes(run(store.get_present()), writer.clock_ms()) == [
        SweepChange("@a:hs", "unavailable")
    ]
    clock.advance(0.2)
    assert writer.sweep_changes(run(store.get_present()), writer.clock_ms()) == [
        SweepChange("@a:hs", "offline")
    ]
    run(writer.sweep())
    assert state(store, "@a:hs") == "offline"
    assert store.rows["@a:hs"].last_active_ts == 1_000_000_000  # kept from the activity


def test_parked_long_poll_keeps_user_present_and_its_end_counts_as_seen() -> None:
    writer, store, _, clock = make()
    run(writer.on_sync_start("@a:hs", "online"))
    run(writer.on_sync_start("@a:hs", "online"))  # two devices
    clock.advance(20)
    writer.on_sync_end("@a:hs")
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"  # idle, but one poll is still parked
    clock.advance(20)
    writer.on_sync_end("@a:hs")
    clock.advance(2.9)
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"
    clock.advance(0.2)
    run(writer.sweep())
    assert state(store, "@a:hs") == "offline"


def test_a_lost_sync_end_expires_with_its_lease() -> None:
    writer, store, _, clock = make()
    run(writer.on_sync_start("@a:hs", "online"))
    clock.advance(60 + 2.9)
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"
    clock.advance(0.2)  # past max_sync_ms + offline_timeout_ms with no end reported
    run(writer.sweep())
    assert state(store, "@a:hs") == "offline"


def test_user_set_unavailable_and_offline_are_untouched() -> None:
    writer, store, _, clock = make()
    run(writer.set_presence("@u:hs", "unavailable", "lunch"))
    run(writer.set_presence("@o:hs", "offline"))
    clock.advance(3600)
    assert run(writer.sweep()) == 0
    assert state(store, "@u:hs") == "unavailable"
    assert store.rows["@u:hs"].status_msg == "lunch"
    assert state(store, "@o:hs") == "offline"


def test_user_set_online_goes_idle_then_offline() -> None:
    writer, store, _, clock = make()
    run(writer.set_presence("@a:hs", "online"))
    clock.advance(1.1)
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"
    clock.advance(2.0)
    run(writer.sweep())
    assert state(store, "@a:hs") == "offline"


def test_activity_brings_an_idle_user_back_online_but_syncing_does_not() -> None:
    writer, store, _, clock = make()
    run(writer.on_sync_start("@a:hs", "online"))
    clock.advance(1.1)
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"
    run(writer.on_sync_start("@a:hs", "online"))  # a long-poll is not activity
    assert state(store, "@a:hs") == "unavailable"
    run(writer.on_activity("@a:hs"))  # e.g. sent a message
    assert state(store, "@a:hs") == "online"
    assert store.rows["@a:hs"].last_active_ts == writer.clock_ms()


def test_activity_keeps_self_set_unavailable_and_ignores_offline() -> None:
    writer, store, _, clock = make()
    run(writer.set_presence("@u:hs", "unavailable"))
    run(writer.set_presence("@o:hs", "offline"))
    clock.advance(5)
    run(writer.on_activity("@u:hs"))
    run(writer.on_activity("@o:hs"))
    assert state(store, "@u:hs") == "unavailable"
    assert store.rows["@u:hs"].last_active_ts == writer.clock_ms()
    assert state(store, "@o:hs") == "offline"


def test_users_unseen_since_the_writer_started_get_a_full_offline_timeout() -> None:
    writer, store, _, clock = make()
    # A row left online by a previous run of the writer, active long ago.
    run(store.put(1, "@a:hs", "online", None, 1))
    clock.advance(2.9)
    run(writer.sweep())
    assert state(store, "@a:hs") == "unavailable"
    clock.advance(0.2)
    run(writer.sweep())
    assert state(store, "@a:hs") == "offline"
