"""The device-lists sync source answers "nothing changed" without the database only when
nothing can have changed: no device-list position moved, and no membership event in the
events window, all of whose rows the source has seen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from homeserver.handlers.device_lists import DeviceListsSyncSource
from homeserver.notifier import Notifier
from homeserver.sync.sources import SyncSourceRequest
from storage.stores.events import StreamRow


def _source(start: int) -> tuple[DeviceListsSyncSource, Notifier]:
    notifier = Notifier(Clock())
    ctx: Any = SimpleNamespace(
        events_tracker=SimpleNamespace(position=start), notifier=notifier, db=object()
    )
    return DeviceListsSyncSource(ctx), notifier


def _req(since: int, up_to: int, events_since: int | None, events_up_to: int) -> SyncSourceRequest:
    return SyncSourceRequest(
        user_id="@a:hs",
        device_id="D",
        since=since,
        up_to=up_to,
        joined_room_ids=frozenset(),
        newly_joined_room_ids=frozenset(),
        events_since=events_since,
        events_up_to=events_up_to,
    )


def _row(pos: int, event_type: str) -> StreamRow:
    member = event_type == "m.room.member"
    return StreamRow(
        pos, "!r:hs", event_type, "@b:hs" if member else None, "join" if member else None
    )


def test_quiet_window_needs_no_database() -> None:
    source, notifier = _source(start=10)
    notifier.on_new_events([_row(11, "m.room.message"), _row(12, "m.room.message")])
    assert source._nothing_can_have_changed(_req(5, 5, 10, 12))


def test_membership_event_in_the_window_goes_to_the_database() -> None:
    source, notifier = _source(start=10)
    notifier.on_new_events([_row(11, "m.room.member"), _row(12, "m.room.message")])
    assert not source._nothing_can_have_changed(_req(5, 5, 10, 12))
    # A window that starts after the membership event is quiet again.
    assert source._nothing_can_have_changed(_req(5, 5, 11, 12))


def test_device_list_position_moved_goes_to_the_database() -> None:
    source, notifier = _source(start=10)
    notifier.on_new_events([_row(11, "m.room.message")])
    assert not source._nothing_can_have_changed(_req(5, 6, 10, 11))


def test_rows_not_yet_seen_or_from_before_start_go_to_the_database() -> None:
    source, notifier = _source(start=10)
    # The events position may move before the notifier hands over the rows.
    assert not source._nothing_can_have_changed(_req(5, 5, 10, 11))
    # Rows before the source existed were never observed.
    notifier.on_new_events([_row(11, "m.room.message")])
    assert not source._nothing_can_have_changed(_req(5, 5, 9, 11))
    # Initial syncs have no window.
    assert not source._nothing_can_have_changed(_req(5, 5, None, 11))
