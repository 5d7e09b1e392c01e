"""Who is syncing reaches the presence writer as batched transitions that /sync never
waits for: SyncingReporter on a fake clock, and the writer's handling of a batch."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import defer
from twisted.internet.task import Clock

from homeserver.handlers.presence import PresenceWriter, SyncingNotice, SyncingReporter
from homeserver.notifier import Notifier
from storage.stores.presence import PresenceRow
from workers.config import PresenceConfig

CONFIG = PresenceConfig(offline_timeout_ms=10_000, sync_notice_interval_ms=1_000)


class Sent:
    def __init__(self) -> None:
        self.notices: list[SyncingNotice] = []
        self.pending: list[defer.Deferred[None]] = []
        self.fail_next = False

    def __call__(self, notice: SyncingNotice) -> defer.Deferred[None]:
        self.notices.append(notice)
        if self.fail_next:
            self.fail_next = False
            return defer.fail(RuntimeError("writer unreachable"))
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        return d

    def answer_all(self) -> None:
        while self.pending:
            self.pending.pop(0).callback(None)


def _reporter() -> tuple[SyncingReporter, Sent, Clock]:
    clock = Clock()
    sent = Sent()
    return SyncingReporter(sent, clock, CONFIG), sent, clock


def test_back_to_back_long_polls_tell_the_writer_once() -> None:
    reporter, sent, clock = _reporter()
    reporter.sync_started("@a:hs", "online")
    clock.advance(0)  # a beginning goes out on the next reactor turn
    assert sent.notices == [SyncingNotice(started=(("@a:hs", "online"),))]
    sent.answer_all()
    # Long-poll after long-poll: each ends and the next begins within the hold.
    for _ in range(30):
        clock.advance(0.1)
        reporter.sync_finished("@a:hs", "online")
        reporter.sync_started("@a:hs", "online")
        clock.advance(0)
    clock.advance(1)
    assert len(sent.notices) == 1
    # The user stops: the end goes out once the hold has passed, with when it happened.
    ended_at = int(clock.seconds() * 1000)
    reporter.sync_finished("@a:hs", "online")
    clock.advance(0.5)
    assert len(sent.notices) == 1
    clock.advance(1)
    assert sent.notices[-1] == SyncingNotice(ended=(("@a:hs", ended_at),))


def test_the_whole_set_is_resent_every_half_offline_timeout() -> None:
    reporter, sent, clock = _reporter()
    reporter.sync_started("@a:hs", "online")
    reporter.sync_started("@b:hs", "unavailable")
    clock.advance(0)
    sent.answer_all()
    clock.advance(CONFIG.offline_timeout_ms / 2000)
    assert sent.notices[-1].still == (("@a:hs", "online"), ("@b:hs", "unavailable"))
    assert sent.notices[-1].started == ()


def test_one_call_at_a_time_and_failures_are_told_again() -> None:
    reporter, sent, clock = _reporter()
    reporter.sync_started("@a:hs", "online")
    clock.advance(0)
    assert len(sent.notices) == 1
    # While the first call is out, a second beginning waits for it (order is kept).
    reporter.sync_started("@b:hs", "online")
    clock.advance(0)
    assert len(sent.notices) == 1
    sent.fail_next = True
    sent.answer_all()
    # The answer released @b's beginning, whose call failed: it is told again.
    assert sent.notices[1].started == (("@b:hs", "online"),)
    clock.advance(1)
    assert sent.notices[-1].started == (("@b:hs", "online"),)
    assert len(sent.notices) == 3


def test_notices_round_trip_and_reject_bad_entries() -> None:
    notice = SyncingNotice((("@a:hs", "online"),), (("@b:hs", "unavailable"),), (("@c:hs", 5),))
    assert SyncingNotice.from_json(notice.to_json()) == notice
    for bad in (
        {"started": [["@a:hs", "offline"]]},
        {"started": [["@a:hs"]]},
        {"ended": [["@a:hs", "5"]]},
        {"still": [[1, "online"]]},
    ):
        try:
            SyncingNotice.from_json(bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"accepted {bad!r}")


class _Store:
    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    async def get(self, user_id: str) -> Any:
        return self.rows.get(user_id)

    async def put(self, stream_id: int, user_id: str, state: str, msg: Any, ts: int) -> None:
        self.rows[user_id] = PresenceRow(user_id, state, msg, ts, stream_id)

    async def get_present(self) -> list[Any]:
        return [r for r in self.rows.values() if r.state != "offline"]

    async def get_joined_rooms(self, user_ids: list[str]) -> set[str]:
        return set()


class _Writer:
    async def write(self, store: Any, on_visible: Any = None) -> Any:
        await store(1)
        return None, 1


class _Notifier:
    def wake_user(self, user_id: str) -> None:
        pass

    def wake_room(self, room_id: str) -> None:
        pass


def test_the_writer_applies_a_batch_in_order() -> None:
    clock = Clock()
    store = _Store()
    writer = PresenceWriter(
        store,
        _Writer(),
        cast(Notifier, _Notifier()),
        lambda: int(clock.seconds() * 1000),
        CONFIG,
    )
    out: list[Any] = []
    notice = SyncingNotice(
        started=(("@a:hs", "online"), ("@b:hs", "online")), ended=(("@b:hs", 0),)
    )
    defer.ensureDeferred(writer.on_syncing(notice)).addBoth(out.append)
    assert out == [None]
    assert store.rows["@a:hs"].state == "online" and store.rows["@b:hs"].state == "online"
    clock.advance(8)
    assert writer.is_syncing("@a:hs", 8_000) and not writer.is_syncing("@b:hs", 8_000)
    # A refresh keeps a long-running sync leased; one whose start was lost begins now.
    defer.ensureDeferred(
        writer.on_syncing(SyncingNotice(still=(("@a:hs", "online"), ("@c:hs", "online"))))
    )
    assert writer.in_flight["@a:hs"] == [8_000]
    assert store.rows["@c:hs"].state == "online"


def test_only_a_users_first_sync_waits_for_the_writer() -> None:
    reporter, sent, clock = _reporter()
    first = reporter.sync_started("@a:hs", "online")
    assert first is not None and not first.called
    clock.advance(0)
    sent.answer_all()
    assert first.called
    reporter.sync_finished("@a:hs", "online")
    assert reporter.sync_started("@a:hs", "online") is None  # the next long-poll
    # A waiting /sync whose client hung up does not break the answer.
    cancelled = reporter.sync_started("@b:hs", "online")
    assert cancelled is not None
    cancelled.addErrback(lambda f: None)
    cancelled.cancel()
    clock.advance(0)
    sent.answer_all()
