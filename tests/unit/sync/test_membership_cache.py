"""UserMembershipCache (pure): cached per user, dropped by the user's membership rows."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from homeserver.sync.membership_cache import UserMembershipCache
from storage.stores.events import StreamRow
from storage.stores.sync import UserMembership

ALICE, BOB = "@alice:x", "@bob:x"


class Table:
    """room_memberships in memory, with a count of reads (and an optional held read)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, UserMembership]] = []
        self.reads = 0
        self.hold: defer.Deferred[None] | None = None
        self.position = 0

    def add(self, user_id: str, room_id: str, membership: str) -> StreamRow:
        self.position += 1
        pos = self.position
        self.rows.append((user_id, UserMembership(room_id, membership, pos, f"$m{pos}")))
        return StreamRow(pos, room_id, "m.room.member", user_id, membership)

    async def fetch(self, user_id: str) -> list[UserMembership]:
        self.reads += 1
        snapshot = [m for owner, m in self.rows if owner == user_id]
        if self.hold is not None:
            await self.hold
        return snapshot


def get(cache: UserMembershipCache, user_id: str, pos: int) -> tuple[UserMembership, ...]:
    out: list[Any] = []
    defer.ensureDeferred(cache.get(user_id, pos)).addBoth(out.append)
    assert out, "the read did not finish"
    return tuple(out[0])


def make() -> tuple[Table, UserMembershipCache]:
    table = Table()
    return table, UserMembershipCache(table.fetch, lambda: table.position)


def test_cached_until_a_membership_row_of_the_user() -> None:
    table, cache = make()
    cache.on_rows([table.add(BOB, "!a", "join")])
    assert [m.room_id for m in get(cache, BOB, table.position)] == ["!a"]
    assert [m.room_id for m in get(cache, BOB, table.position)] == ["!a"]
    assert table.reads == 1

    # Someone else's membership, or another event type: still cached.
    cache.on_rows([table.add(ALICE, "!a", "join")])
    cache.on_rows([StreamRow(table.position + 1, "!a", "m.room.message", None, None)])
    table.position += 1
    get(cache, BOB, table.position)
    assert table.reads == 1

    # Bob joins another room: the next read sees it.
    cache.on_rows([table.add(BOB, "!b", "join")])
    assert [m.room_id for m in get(cache, BOB, table.position)] == ["!a", "!b"]
    assert table.reads == 2
    # Bob leaves: seen too.
    cache.on_rows([table.add(BOB, "!a", "leave")])
    assert [(m.room_id, m.membership) for m in get(cache, BOB, table.position)][-1] == (
        "!a",
        "leave",
    )
    assert table.reads == 3


def test_a_position_beyond_the_rows_seen_is_read_again() -> None:
    # The process's position may move a moment before its rows reach on_rows: an entry
    # read earlier must not answer for that position.
    table, cache = make()
    cache.on_rows([table.add(BOB, "!a", "join")])
    get(cache, BOB, table.position)
    row = table.add(BOB, "!b", "join")  # stored and the position advanced, rows not seen
    assert [m.room_id for m in get(cache, BOB, table.position)] == ["!a", "!b"]
    assert table.reads == 2
    cache.on_rows([row])
    get(cache, BOB, table.position)
    get(cache, BOB, table.position)
    assert table.reads == 3


def test_a_read_overlapping_an_invalidation_is_not_kept() -> None:
    table, cache = make()
    cache.on_rows([table.add(BOB, "!a", "join")])
    table.hold = defer.Deferred()
    out: list[Any] = []
    defer.ensureDeferred(cache.get(BOB, table.position)).addBoth(out.append)
    # Bob's membership changes while the (older) read is in flight.
    cache.on_rows([table.add(BOB, "!b", "join")])
    hold, table.hold = table.hold, None
    hold.callback(None)
    assert [m.room_id for m in out[0]] == ["!a"]  # what that read saw...
    # ...is not cached: the next sync reads again and sees the join.
    assert [m.room_id for m in get(cache, BOB, table.position)] == ["!a", "!b"]
    assert table.reads == 2


def test_bounded() -> None:
    table = Table()
    cache = UserMembershipCache(table.fetch, lambda: table.position, max_users=2)
    for user in ("@a:x", "@b:x", "@c:x"):
        cache.on_rows([table.add(user, "!r", "join")])
    for user in ("@a:x", "@b:x", "@c:x"):
        get(cache, user, table.position)
    assert len(cache) == 2
    get(cache, "@a:x", table.position)  # evicted first, read again
    assert table.reads == 4
