"""Merging what the stream sources contribute to a /sync response (pure)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import attrs

from homeserver.sync.filters import SyncFilter
from homeserver.sync.sources import SectionValue, SyncContribution

logger = logging.getLogger(__name__)

# Top-level sections that hold a list of events, sent as {"events": [...]}.
EVENT_LIST_SECTIONS = ("account_data", "presence", "to_device")
# Per-room sections sources may fill (in joined rooms).
ROOM_SECTIONS = ("ephemeral", "account_data")


@attrs.frozen(slots=True)
class MergedContributions:
    global_sections: dict[str, SectionValue]
    rooms: dict[str, dict[str, list[Any]]]
    has_data: bool


def _merge_lists(a: list[Any], b: list[Any]) -> list[Any]:
    out = list(a)
    seen = [x for x in a if isinstance(x, str)]
    for item in b:
        # Lists of IDs (device_lists.changed) must not repeat; event lists just append.
        if isinstance(item, str) and item in seen:
            continue
        out.append(item)
    return out


def _merge_value(name: str, a: SectionValue, b: SectionValue) -> SectionValue:
    if isinstance(a, list) and isinstance(b, list):
        return _merge_lists(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        merged: dict[str, Any] = dict(a)
        for key, value in b.items():
            old = merged.get(key)
            if isinstance(old, list) and isinstance(value, list):
                merged[key] = _merge_lists(old, value)
            elif isinstance(old, dict) and isinstance(value, dict):
                merged[key] = {**old, **value}
            else:
                merged[key] = value
        return merged
    logger.warning(
        "sync sources disagree on a section's shape; keeping the first", extra={"section": name}
    )
    return a


def merge_contributions(contributions: Iterable[SyncContribution]) -> MergedContributions:
    global_sections: dict[str, SectionValue] = {}
    rooms: dict[str, dict[str, list[Any]]] = {}
    has_data = False
    for contribution in contributions:
        has_data = has_data or contribution.has_data
        for name, value in contribution.global_sections.items():
            if name in global_sections:
                global_sections[name] = _merge_value(name, global_sections[name], value)
            else:
                global_sections[name] = list(value) if isinstance(value, list) else dict(value)
        for room_id, sections in contribution.rooms.items():
            room = rooms.setdefault(room_id, {})
            for name, events in sections.items():
                room[name] = [*room.get(name, []), *events]
    return MergedContributions(global_sections, rooms, has_data)


def filter_contributions(
    merged: MergedContributions, sync_filter: SyncFilter, joined_room_ids: Iterable[str]
) -> MergedContributions:
    """Applies the client's filter, and keeps per-room data of joined rooms only."""
    global_sections = dict(merged.global_sections)
    for name, event_filter in (
        ("account_data", sync_filter.account_data),
        ("presence", sync_filter.presence),
    ):
        value = global_sections.get(name)
        if isinstance(value, list):
            global_sections[name] = event_filter.filter_json(value)
    joined = set(joined_room_ids)
    room_filter = sync_filter.room
    rooms: dict[str, dict[str, list[Any]]] = {}
    for room_id, sections in merged.rooms.items():
        if room_id not in joined or not room_filter.allows_room(room_id):
            continue
        kept: dict[str, list[Any]] = {}
        for name, events in sections.items():
            if name not in ROOM_SECTIONS:
                continue
            section_filter = (
                room_filter.ephemeral if name == "ephemeral" else room_filter.account_data
            )
            if not section_filter.allows_room(room_id):
                continue
            allowed = section_filter.filter_json(events)
            if allowed:
                kept[name] = allowed
        if kept:
            rooms[room_id] = kept
    return MergedContributions(global_sections, rooms, merged.has_data)


def global_sections_json(sections: dict[str, SectionValue]) -> dict[str, Any]:
    """The response's top-level sections: every section present, sources' data placed."""
    out: dict[str, Any] = {
        "account_data": {"events": []},
        "presence": {"events": []},
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
        "device_one_time_keys_count": {},
        "device_unused_fallback_key_types": [],
    }
    for name, value in sections.items():
        if name in EVENT_LIST_SECTIONS and isinstance(value, list):
            out[name] = {"events": value}
        else:
            out[name] = value
    return out
