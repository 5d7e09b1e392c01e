"""Merging stream sources' contributions into a /sync response (pure)."""

from __future__ import annotations

from homeserver.sync.filters import parse_sync_filter
from homeserver.sync.merge import filter_contributions, global_sections_json, merge_contributions
from homeserver.sync.sources import SyncContribution


def test_lists_concatenate_and_dicts_merge() -> None:
    merged = merge_contributions(
        [
            SyncContribution(
                global_sections={
                    "account_data": [{"type": "a", "content": {}}],
                    "device_lists": {"changed": ["@a:x"], "left": []},
                    "device_one_time_keys_count": {"signed_curve25519": 5},
                },
                has_data=True,
            ),
            SyncContribution(
                global_sections={
                    "account_data": [{"type": "b", "content": {}}],
                    "device_lists": {"changed": ["@a:x", "@b:x"], "left": ["@c:x"]},
                    "device_unused_fallback_key_types": ["signed_curve25519"],
                }
            ),
        ]
    )
    assert merged.has_data
    assert [e["type"] for e in merged.global_sections["account_data"]] == ["a", "b"]  # type: ignore[index]
    # IDs in device lists are not repeated.
    assert merged.global_sections["device_lists"] == {"changed": ["@a:x", "@b:x"], "left": ["@c:x"]}
    out = global_sections_json(merged.global_sections)
    assert out["account_data"] == {
        "events": [{"type": "a", "content": {}}, {"type": "b", "content": {}}]
    }
    assert out["device_one_time_keys_count"] == {"signed_curve25519": 5}
    assert out["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert out["presence"] == {"events": []} and out["to_device"] == {"events": []}


def test_has_data_is_any_source() -> None:
    assert not merge_contributions([SyncContribution(), SyncContribution()]).has_data
    assert merge_contributions([SyncContribution(), SyncContribution(has_data=True)]).has_data
    assert not merge_contributions([]).has_data


def test_room_sections_concatenate_per_room() -> None:
    merged = merge_contributions(
        [
            SyncContribution(rooms={"!a:x": {"ephemeral": [{"type": "m.typing", "content": {}}]}}),
            SyncContribution(
                rooms={
                    "!a:x": {"ephemeral": [{"type": "m.receipt", "content": {}}]},
                    "!b:x": {"account_data": [{"type": "m.tag", "content": {}}]},
                }
            ),
        ]
    )
    assert [e["type"] for e in merged.rooms["!a:x"]["ephemeral"]] == ["m.typing", "m.receipt"]
    assert merged.rooms["!b:x"]["account_data"][0]["type"] == "m.tag"


def test_shape_conflict_keeps_first() -> None:
    merged = merge_contributions(
        [
            SyncContribution(global_sections={"device_lists": {"changed": []}}),
            SyncContribution(global_sections={"device_lists": ["oops"]}),
        ]
    )
    assert merged.global_sections["device_lists"] == {"changed": []}


def test_merge_does_not_mutate_contributions() -> None:
    first = SyncContribution(
        global_sections={"presence": [{"type": "m.presence", "sender": "@a:x"}]}
    )
    merge_contributions(
        [first, SyncContribution(global_sections={"presence": [{"type": "m.presence"}]})]
    )
    assert len(first.global_sections["presence"]) == 1


def test_filter_applies_to_sections_and_rooms() -> None:
    merged = merge_contributions(
        [
            SyncContribution(
                global_sections={
                    "presence": [
                        {"type": "m.presence", "sender": "@a:x"},
                        {"type": "m.presence", "sender": "@spam:x"},
                    ],
                    "account_data": [{"type": "m.direct"}, {"type": "org.example"}],
                    "to_device": [{"type": "m.room_key", "sender": "@spam:x"}],
                },
                rooms={
                    "!a:x": {"ephemeral": [{"type": "m.typing"}, {"type": "m.receipt"}]},
                    "!b:x": {"ephemeral": [{"type": "m.typing"}]},
                    "!gone:x": {"ephemeral": [{"type": "m.typing"}]},
                    "!c:x": {"account_data": [{"type": "m.tag"}], "unknown": [{"type": "x"}]},
                },
                has_data=True,
            )
        ]
    )
    sync_filter = parse_sync_filter(
        {
            "presence": {"not_senders": ["@spam:x"]},
            "account_data": {"types": ["m.*"]},
            "room": {
                "not_rooms": ["!b:x"],
                "ephemeral": {"types": ["m.typing"]},
                "account_data": {"not_rooms": ["!c:x"]},
            },
        }
    )
    out = filter_contributions(merged, sync_filter, ["!a:x", "!b:x", "!c:x"])
    assert out.global_sections["presence"] == [{"type": "m.presence", "sender": "@a:x"}]
    assert out.global_sections["account_data"] == [{"type": "m.direct"}]
    # to-device messages are never filtered away.
    assert out.global_sections["to_device"] == [{"type": "m.room_key", "sender": "@spam:x"}]
    # !b excluded by the room filter, !gone not joined, !c's account data filtered away.
    assert out.rooms == {"!a:x": {"ephemeral": [{"type": "m.typing"}]}}
    assert out.has_data
