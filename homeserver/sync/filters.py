"""Client filters (pure): parsing a filter definition, and deciding what it lets through.

A filter is the JSON object of `POST /user/{userId}/filter` (or inline on /sync and
/messages). Parsing checks its shape and raises `FilterError` naming the offending field;
unknown keys are ignored, so filters written for newer spec versions still load.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

EVENT_FORMATS = ("client", "federation")


class FilterError(ValueError):
    """The filter's shape is wrong; `field` is the dotted path of the offending key."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    # Only `*` is special (any sequence, including none); everything else is literal.
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def type_matches(pattern: str, event_type: str) -> bool:
    if "*" not in pattern:
        return pattern == event_type
    return _glob(pattern).fullmatch(event_type) is not None


def _any_type_matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(type_matches(p, event_type) for p in patterns)


@attrs.frozen(slots=True)
class EventFilter:
    """Filters events by type and sender; `None` lists mean "no restriction"."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()

    def allows(self, event_type: str, sender: str | None = None) -> bool:
        if _any_type_matches(self.not_types, event_type):
            return False
        if self.types is not None and not _any_type_matches(self.types, event_type):
            return False
        # Events without a sender (account data, typing, receipts) pass the sender rules.
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        return True

    def allows_json(self, event: Mapping[str, Any]) -> bool:
        event_type = event.get("type")
        sender = event.get("sender")
        return self.allows(
            event_type if isinstance(event_type, str) else "",
            sender if isinstance(sender, str) else None,
        )

    def filter_json(self, events: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The events this filter lets through, at most `limit` of them (the first ones)."""
        out = [e for e in events if self.allows_json(e)]
        if self.limit is not None:
            out = out[: self.limit]
        return out

    def allows_nothing(self) -> bool:
        """True when no event can pass (e.g. `types: []`): callers may skip the work."""
        return self.types == () or self.senders == frozenset() or self.limit == 0


@attrs.frozen(slots=True)
class RoomEventFilter(EventFilter):
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows_event(
        self,
        event_type: str,
        sender: str | None,
        room_id: str | None = None,
        content: Mapping[str, Any] | None = None,
    ) -> bool:
        if room_id is not None and not self.allows_room(room_id):
            return False
        if self.contains_url is not None:
            has_url = isinstance((content or {}).get("url"), str)
            if has_url != self.contains_url:
                return False
        return self.allows(event_type, sender)

    def allows_json(self, event: Mapping[str, Any]) -> bool:
        event_type = event.get("type")
        sender = event.get("sender")
        room_id = event.get("room_id")
        content = event.get("content")
        return self.allows_event(
            event_type if isinstance(event_type, str) else "",
            sender if isinstance(sender, str) else None,
            room_id if isinstance(room_id, str) else None,
            content if isinstance(content, Mapping) else None,
        )

    def allows_nothing(self) -> bool:
        return EventFilter.allows_nothing(self) or self.rooms == frozenset()


@attrs.frozen(slots=True)
class RoomFilter:
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    timeline: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    state: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    ephemeral: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    account_data: RoomEventFilter = attrs.field(factory=RoomEventFilter)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@attrs.frozen(slots=True)
class SyncFilter:
    """The whole filter a /sync request runs with."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = attrs.field(factory=EventFilter)
    account_data: EventFilter = attrs.field(factory=EventFilter)
    room: RoomFilter = attrs.field(factory=RoomFilter)

    @property
    def lazy_load_members(self) -> bool:
        # The spec places lazy-loading on the state filter; clients also set it on the
        # timeline filter, which means the same thing here.
        return self.room.state.lazy_load_members or self.room.timeline.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        return (
            self.room.state.include_redundant_members
            or self.room.timeline.include_redundant_members
        )


# ---------------------------------------------------------------------------------------
# Parsing


def _obj(raw: Any, field: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FilterError(field, "must be a JSON object")
    return raw


def _bool(raw: Mapping[str, Any], key: str, field: str, default: bool = False) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise FilterError(_join(field, key), "must be a boolean")
    return value


def _opt_bool(raw: Mapping[str, Any], key: str, field: str) -> bool | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise FilterError(_join(field, key), "must be a boolean")
    return value


def _str_list(raw: Mapping[str, Any], key: str, field: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise FilterError(_join(field, key), "must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FilterError(f"{_join(field, key)}[{i}]", "must be a string")
    return tuple(value)


def _str_set(raw: Mapping[str, Any], key: str, field: str) -> frozenset[str] | None:
    items = _str_list(raw, key, field)
    return None if items is None else frozenset(items)


def _limit(raw: Mapping[str, Any], field: str) -> int | None:
    value = raw.get("limit")
    if value is None:
        return None
    # A bool is an int in Python; JSON true is not a limit.
    if isinstance(value, bool) or not isinstance(value, int):
        raise FilterError(_join(field, "limit"), "must be an integer")
    if value < 0:
        raise FilterError(_join(field, "limit"), "must not be negative")
    return value


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _event_filter_args(raw: Mapping[str, Any], field: str) -> dict[str, Any]:
    return {
        "limit": _limit(raw, field),
        "types": _str_list(raw, "types", field),
        "not_types": _str_list(raw, "not_types", field) or (),
        "senders": _str_set(raw, "senders", field),
        "not_senders": _str_set(raw, "not_senders", field) or frozenset(),
    }


def parse_event_filter(raw: Any, field: str = "") -> EventFilter:
    return EventFilter(**_event_filter_args(_obj(raw, field), field))


def parse_room_event_filter(raw: Any, field: str = "") -> RoomEventFilter:
    obj = _obj(raw, field)
    return RoomEventFilter(
        **_event_filter_args(obj, field),
        rooms=_str_set(obj, "rooms", field),
        not_rooms=_str_set(obj, "not_rooms", field) or frozenset(),
        contains_url=_opt_bool(obj, "contains_url", field),
        lazy_load_members=_bool(obj, "lazy_load_members", field),
        include_redundant_members=_bool(obj, "include_redundant_members", field),
        unread_thread_notifications=_bool(obj, "unread_thread_notifications", field),
    )


def parse_room_filter(raw: Any, field: str = "room") -> RoomFilter:
    obj = _obj(raw, field)
    return RoomFilter(
        rooms=_str_set(obj, "rooms", field),
        not_rooms=_str_set(obj, "not_rooms", field) or frozenset(),
        include_leave=_bool(obj, "include_leave", field),
        timeline=parse_room_event_filter(obj.get("timeline"), _join(field, "timeline")),
        state=parse_room_event_filter(obj.get("state"), _join(field, "state")),
        ephemeral=parse_room_event_filter(obj.get("ephemeral"), _join(field, "ephemeral")),
        account_data=parse_room_event_filter(obj.get("account_data"), _join(field, "account_data")),
    )


def parse_sync_filter(raw: Any) -> SyncFilter:
    """Checks a filter definition's shape; raises FilterError naming the bad field."""
    if not isinstance(raw, dict):
        raise FilterError("", "a filter must be a JSON object")
    event_format = raw.get("event_format", "client")
    if event_format is None:
        event_format = "client"
    if event_format not in EVENT_FORMATS:
        raise FilterError("event_format", "must be 'client' or 'federation'")
    event_fields = _str_list(raw, "event_fields", "")
    return SyncFilter(
        event_fields=event_fields,
        event_format=event_format,
        presence=parse_event_filter(raw.get("presence"), "presence"),
        account_data=parse_event_filter(raw.get("account_data"), "account_data"),
        room=parse_room_filter(raw.get("room"), "room"),
    )


# ---------------------------------------------------------------------------------------
# event_fields


def split_field_path(path: str) -> tuple[str, ...]:
    """`content.m\\.relates_to` -> ("content", "m.relates_to"): `\\.` is a literal dot and
    `\\\\` a literal backslash; any other backslash stays as it is."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def only_fields(event: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """A copy of `event` keeping only the given dot-separated paths (missing ones skipped)."""
    out: dict[str, Any] = {}
    for path in fields:
        keys = split_field_path(path)
        value: Any = event
        found = True
        for key in keys:
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            else:
                found = False
                break
        if not found:
            continue
        target = out
        for key in keys[:-1]:
            nxt = target.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                target[key] = nxt
            target = nxt
        target[keys[-1]] = value
    return out
