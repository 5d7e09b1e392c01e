"""LazyMemberCache (pure): what a device was sent, keyed by the token that proves receipt."""

from __future__ import annotations

from homeserver.sync.lazy_members import LazyMemberCache


def test_known_only_under_the_token_it_was_sent_with() -> None:
    cache = LazyMemberCache()
    cache.remember("@u", "D", "s5", {}, {"!r": {"@a": "$1"}})
    assert cache.known("@u", "D", "s5") == {"!r": {"@a": "$1"}}
    assert cache.known("@u", "D", "s4") == {}
    assert cache.known("@u", "OTHER", "s5") == {}
    assert cache.known("@u", "D", None) == {}


def test_builds_on_base_and_resets_rooms() -> None:
    cache = LazyMemberCache()
    cache.remember("@u", "D", "s5", {}, {"!r": {"@a": "$1"}, "!q": {"@b": "$2"}})
    base = cache.known("@u", "D", "s5")
    cache.remember("@u", "D", "s9", base, {"!r": {"@c": "$3"}}, reset_room_ids=["!q"])
    assert cache.known("@u", "D", "s9") == {"!r": {"@a": "$1", "@c": "$3"}}
    # The older entry is untouched: a client retrying s5 gets the same answer.
    assert cache.known("@u", "D", "s5") == {"!r": {"@a": "$1"}, "!q": {"@b": "$2"}}


def test_bounded() -> None:
    cache = LazyMemberCache(max_devices=2, tokens_per_device=2, max_members_per_device=3)
    for i in range(3):
        cache.remember("@u", "D", f"s{i}", {}, {"!r": {"@a": "$1"}})
    assert cache.known("@u", "D", "s0") == {}
    assert cache.known("@u", "D", "s2") != {}
    for device in ("E", "F"):
        cache.remember("@u", device, "s1", {}, {"!r": {"@a": "$1"}})
    assert cache.known("@u", "D", "s2") == {}  # evicted, least recently used
    cache.remember("@u", "E", "s2", {}, {"!r": {"@a": "$1", "@b": "$2", "@c": "$3", "@d": "$4"}})
    assert cache.known("@u", "E", "s2") == {} and cache.known("@u", "E", "s1") == {}
