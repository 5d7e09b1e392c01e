"""The contract between /sync and the per-user streams other modules own.

A stream source (typing, receipts, presence, account data, to-device, device lists...)
implements `SyncSource` and registers itself in its module's `install(ctx, router)`:

    register_sync_source(ctx, MySource(...))

For every /sync request the handler calls `for_sync` on every registered source in
parallel and merges what they return into the response:

* `global_sections[name]` becomes the top-level section `name`. A list becomes
  `{"events": [...]}` (account_data, presence, to_device); a dict is placed as it is
  (device_lists -> {"changed": [...], "left": [...]}, device_one_time_keys_count -> {...});
  `device_unused_fallback_key_types` is a list placed as it is. Two sources writing the
  same list section are concatenated; dict sections are merged key by key.
* `rooms[room_id][name]` (name "ephemeral" or "account_data") becomes
  `rooms.join[room_id][name].events`. Only joined rooms are shown; others are dropped.

The handler applies the client's filter to what sources return (types, senders, rooms,
limit), so a source may ignore `req.filter`; it is passed so a source can skip work
(e.g. `req.filter.presence.allows_nothing()` when the client asked for no presence at all).

Positions: the handler fixes `req.up_to` before calling `for_sync`: the position of the
process's tracker for the stream (`ctx.trackers[stream].position`) when there is one,
else the source's `current_position()`. A source returns what changed in (since, up_to]
(since None: an initial sync, return the full current picture, e.g. all account data).
`next_batch` carries `up_to` for that stream, so the next call's `since` is exactly this
call's `up_to`. `has_data` is True when the contribution holds something new for this
user; when every source and the rooms are empty, a long-poll keeps waiting. Wake long-polls with
`ctx.notifier.wake_user(user_id)` / `ctx.notifier.wake_room(room_id)` once the new data is
readable at the new position.

Rooms in `req.newly_joined_room_ids` were joined within this sync's window: give their
full per-room picture (e.g. every current receipt), as for an initial sync.

If `for_sync` raises, the handler logs it, leaves that stream's position in next_batch
where the client's token had it (so nothing is skipped) and answers without it.

A source whose `for_sync` returns nothing when its stream has not moved (`since ==
up_to`) and no room was newly joined may say so with a class attribute
`quiet_when_unmoved = True`: the handler then skips the call for such incremental syncs
(never for an initial or full_state sync), which is most long-poll wake-ups. A source
that reports something on every sync (e.g. one-time key counts) must not set it.

A source may also implement `on_sync_request` (see `SyncActivityHook`): the handler calls
it once per /sync request before computing, e.g. so presence can honour `set_presence`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from homeserver.sync.filters import SyncFilter

SYNC_SOURCES_KEY = "sync_sources"

# A section's value: a list of event JSON objects, or a JSON object (device_lists...).
SectionValue = list[Any] | dict[str, Any]


@attrs.frozen(slots=True)
class SyncSourceRequest:
    user_id: str
    device_id: str
    # The position of this source's stream the client has seen; None for an initial sync
    # (or full_state=true).
    since: int | None
    # This source's position the response is computed at (from current_position()).
    up_to: int
    joined_room_ids: frozenset[str]
    # Rooms the user joined within the events window of this sync (for an initial sync,
    # every joined room): give their full per-room picture.
    newly_joined_room_ids: frozenset[str]
    filter: SyncFilter = attrs.field(factory=SyncFilter)
    # The client asked for full_state=true: a source that keeps state (account data) may
    # return all of it. `since` is still the client's token (to-device acknowledgements).
    full_state: bool = False
    # The events-stream window of this sync, (events_since, events_up_to], for sources whose
    # output depends on membership changes (device_lists); events_since None: initial sync.
    events_since: int | None = None
    events_up_to: int = 0


@attrs.frozen(slots=True)
class SyncContribution:
    # Top-level sections: {"account_data": [...], "presence": [...], "to_device": [...],
    # "device_lists": {"changed": [...], "left": [...]}, "device_one_time_keys_count": {...},
    # "device_unused_fallback_key_types": [...]}.
    global_sections: dict[str, SectionValue] = attrs.field(factory=dict)
    # room_id -> {"ephemeral": [...], "account_data": [...]} for joined rooms.
    rooms: dict[str, dict[str, list[Any]]] = attrs.field(factory=dict)
    has_data: bool = False


EMPTY_CONTRIBUTION = SyncContribution()


@runtime_checkable
class SyncSource(Protocol):
    # A name in homeserver.sync.tokens.STREAM_ORDER.
    stream: str

    async def current_position(self) -> int: ...

    async def for_sync(self, req: SyncSourceRequest) -> SyncContribution: ...


@runtime_checkable
class SyncActivityHook(Protocol):
    """Optional: called once per /sync request, before the response is computed.

    `set_presence` is the client's `set_presence` parameter, "online" when absent (its
    default in the spec).
    """

    async def on_sync_request(self, user_id: str, device_id: str, set_presence: str) -> None: ...


def register_sync_source(ctx: Any, source: SyncSource) -> None:
    """Adds `source` to `ctx.extras["sync_sources"]` (read by /sync at request time, so the
    order modules install in does not matter). Several sources may share one stream (e.g.
    device lists and one-time-key counts); its token position is the highest they report."""
    sources: list[SyncSource] = ctx.extras.setdefault(SYNC_SOURCES_KEY, [])
    sources.append(source)


def registered_sources(extras: dict[str, Any]) -> list[SyncSource]:
    return list(extras.get(SYNC_SOURCES_KEY, ()))
