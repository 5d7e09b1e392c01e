"""Stored and inline filters: validating uploads, and resolving a request's `filter` param."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from homeserver.http.errors import MatrixError
from homeserver.sync.filters import (
    FilterError,
    RoomEventFilter,
    SyncFilter,
    parse_room_event_filter,
    parse_sync_filter,
)
from storage.stores.filters import FilterStore

# Longest filter ID we look up; ours are 26 characters.
_MAX_FILTER_ID_LENGTH = 128


def filter_id_for(filter_json: str) -> str:
    """A filter's ID: the lowercase base32 of a hash of its canonical JSON, so uploading the
    same filter twice gives the same ID (no allocation race between processes), and the ID
    never starts with "{"."""
    digest = hashlib.sha256(filter_json.encode("utf-8")).digest()[:16]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def canonical_filter_json(raw: dict[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_filter(raw: Any) -> SyncFilter:
    """Parses an uploaded filter; 400 M_BAD_JSON naming the bad field."""
    try:
        return parse_sync_filter(raw)
    except FilterError as e:
        raise MatrixError(400, "M_BAD_JSON", f"Invalid filter: {e}") from None


def _load_inline(param: str, what: str) -> Any:
    try:
        return json.loads(param, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: too deeply nested
        raise MatrixError(400, "M_INVALID_PARAM", f"{what} is not valid JSON") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_inline_sync_filter(param: str) -> SyncFilter:
    try:
        return parse_sync_filter(_load_inline(param, "filter"))
    except FilterError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid filter: {e}") from None


def parse_inline_room_event_filter(param: str | None) -> RoomEventFilter:
    """The `filter` of /messages: a RoomEventFilter as inline JSON."""
    if param is None or param == "":
        return RoomEventFilter()
    raw = _load_inline(param, "filter")
    if not isinstance(raw, dict):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid filter: must be a JSON object")
    try:
        return parse_room_event_filter(raw)
    except FilterError as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid filter: {e}") from None


class UserFilters:
    def __init__(self, store: FilterStore, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms

    async def create(self, user_id: str, raw: dict[str, Any]) -> str:
        """Validates and stores a filter (on the writer); returns its ID."""
        check_filter(raw)
        filter_json = canonical_filter_json(raw)
        filter_id = filter_id_for(filter_json)
        await self.store.add_filter(user_id, filter_id, filter_json, self.clock_ms())
        return filter_id

    async def get_json(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        if len(filter_id) > _MAX_FILTER_ID_LENGTH:
            return None
        stored = await self.store.get_filter_json(user_id, filter_id)
        if stored is None:
            return None
        value = json.loads(stored)
        return value if isinstance(value, dict) else None

    async def resolve_sync_filter(self, user_id: str, param: str | None) -> SyncFilter:
        """`filter` of /sync: absent, inline JSON (starts with "{"), or a stored filter's ID."""
        if param is None or param == "":
            return SyncFilter()
        if param.startswith("{"):
            return parse_inline_sync_filter(param)
        raw = await self.get_json(user_id, param)
        if raw is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"No filter with ID {param[:64]!r}")
        try:
            return parse_sync_filter(raw)
        except FilterError as e:  # stored before a stricter check: tell the client
            raise MatrixError(400, "M_INVALID_PARAM", f"Stored filter is invalid: {e}") from None
