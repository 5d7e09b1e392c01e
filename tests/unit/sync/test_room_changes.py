"""RoomChangeCache (pure): which rooms moved in (since, pos], or that it cannot tell."""

from __future__ import annotations

from homeserver.sync.room_changes import RoomChangeCache
from storage.stores.events import StreamRow


def row(pos: int, room_id: str) -> StreamRow:
    return StreamRow(pos, room_id, "m.room.message", None, None)


def test_answers_from_the_rows_seen() -> None:
    cache = RoomChangeCache()
    assert cache.changed(["!a"], 0, 0) == (set(), ["!a"])  # nothing seen yet: ask the db
    cache.on_rows([row(5, "!a"), row(6, "!b"), row(7, "!a")])
    assert cache.changed(["!a", "!b", "!c"], 5, 7) == ({"!a", "!b"}, [])
    assert cache.changed(["!a", "!b", "!c"], 6, 7) == ({"!a"}, [])
    assert cache.changed(["!a", "!b", "!c"], 7, 7) == (set(), [])
    # !a's newest is beyond pos 6: whether it moved in (5, 6] is not known here.
    assert cache.changed(["!a", "!b"], 5, 6) == ({"!b"}, ["!a"])
    # Before the first row seen, or beyond the last: the database answers.
    assert cache.changed(["!a"], 3, 7) == (set(), ["!a"])
    assert cache.changed(["!a"], 7, 8) == (set(), ["!a"])


def test_evicted_rooms_raise_the_floor() -> None:
    cache = RoomChangeCache(max_rooms=2)
    cache.on_rows([row(1, "!a"), row(2, "!b"), row(3, "!c")])  # !a forgotten (changed at 1)
    assert cache.changed(["!a", "!b"], 0, 3) == (set(), ["!a", "!b"])
    assert cache.changed(["!a", "!b", "!c"], 1, 3) == ({"!b", "!c"}, [])
