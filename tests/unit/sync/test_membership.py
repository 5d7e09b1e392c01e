"""MembershipHistory (pure): sorting rooms into /sync sections."""

from __future__ import annotations

from homeserver.sync.membership import MembershipHistory

ROWS = [
    ("!a", "invite", 1),
    ("!a", "join", 3),
    ("!a", "join", 5),  # a profile change
    ("!b", "join", 2),
    ("!b", "leave", 4),
    ("!b", "join", 6),
    ("!c", "invite", 7),
    ("!c", "leave", 8),
]


def test_at() -> None:
    h = MembershipHistory(ROWS)
    assert h.at("!a", 0) is None
    assert h.at("!a", 1) == "invite"
    assert h.at("!a", 4) == "join"
    assert h.at("!b", 5) == "leave"
    assert h.at("!zzz", 10) is None


def test_newly_joined() -> None:
    h = MembershipHistory(ROWS)
    assert h.newly_joined("!a", 1, 10)  # invite -> join
    assert not h.newly_joined("!a", 3, 10)  # only a profile change since
    assert h.newly_joined("!b", 2, 10)  # left and rejoined in the window
    assert not h.newly_joined("!b", 6, 10)
    assert not h.newly_joined("!c", 0, 10)  # not joined at the end


def test_rejoined_between_ignores_profile_changes() -> None:
    h = MembershipHistory(ROWS)
    assert not h.rejoined_between("!a", 3, 5)
    assert h.rejoined_between("!b", 3, 6)


def test_ever_joined_and_last_change() -> None:
    h = MembershipHistory(ROWS)
    assert not h.ever_joined("!c", 10)
    assert h.ever_joined("!b", 2) and not h.ever_joined("!b", 1)
    last = h.last_change_at("!b", 5)
    assert last is not None and (last.membership, last.stream_ordering) == ("leave", 4)
    assert [c.stream_ordering for c in h.changes_between("!a", 1, 5)] == [3, 5]
    assert h.joined_between("!b", 4, 5) is False and h.joined_between("!b", 4, 6)


def test_rows_out_of_order_are_sorted() -> None:
    h = MembershipHistory(list(reversed(ROWS)))
    assert h.at("!b", 10) == "join" and h.at("!b", 5) == "leave"
