"""Building, authorising and persisting new local events (on the events writer)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from signedjson.key import SigningKey
from twisted.internet import defer

from homeserver.events.auth import AuthError, auth_types_for_event, check_auth_rules
from homeserver.events.builder import build_event
from homeserver.events.canonical import InvalidEventError
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import RoomVersion, get_room_version
from homeserver.handlers.persister import EventPersister
from homeserver.handlers.relations import validate_new_event
from homeserver.http.errors import MatrixError, forbidden
from storage.stores.events import EventStore

logger = logging.getLogger(__name__)

# Local events reference at most this many forward extremities.
MAX_PREV_EVENTS = 10

# A check on a new local event's content beyond the auth rules (e.g. that a canonical
# alias points to the room): (room_id, sender, state_key, content); raises MatrixError.
ContentCheck = Callable[[str, str, str | None, Mapping[str, Any]], Awaitable[None]]


class RoomLocks:
    """One lock per room, so that prev_events and depth are computed on a settled DAG."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[defer.DeferredLock, int]] = {}

    @asynccontextmanager
    async def hold(self, room_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(room_id, (defer.DeferredLock(), 0))
        self._locks[room_id] = (lock, users + 1)
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            lock, users = self._locks[room_id]
            if users <= 1:
                del self._locks[room_id]
            else:
                self._locks[room_id] = (lock, users - 1)


class EventCreationHandler:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        store: EventStore,
        persister: EventPersister,
        clock_ms: Any,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.store = store
        self.persister = persister
        self.clock_ms = clock_ms
        self.locks = RoomLocks()
        # event type -> checks run once the event is authorised, before it is persisted.
        self.content_checks: dict[str, list[ContentCheck]] = {}

    def add_content_check(self, event_type: str, check: ContentCheck) -> None:
        checks = self.content_checks.setdefault(event_type, [])
        if check not in checks:
            checks.append(check)

    async def room_version(self, room_id: str) -> RoomVersion:
        identifier = await self.store.get_room_version(room_id)
        if identifier is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        rv = get_room_version(identifier)
        assert rv is not None
        return rv

    async def create_room_event(
        self, room_version: RoomVersion, sender: str, content: Mapping[str, Any]
    ) -> tuple[Event, int]:
        """Creates and persists a room's m.room.create event; the room ID comes from it (v12)."""
        from homeserver.events.builder import room_id_for_create_event

        origin_server_ts = self.clock_ms()
        while True:
            room_id = None
            if not room_version.room_id_is_create_event_id:
                room_id = await self._new_legacy_room_id()
            event = self._build(
                room_version,
                room_id=room_id,
                sender=sender,
                type="m.room.create",
                state_key="",
                content=content,
                prev_event_ids=[],
                auth_event_ids=[],
                depth=1,
                origin_server_ts=origin_server_ts,
            )
            self._check(event, {})
            actual_room_id = room_id_for_create_event(event)
            async with self.locks.hold(actual_room_id):
                if await self.store.get_room_version(actual_room_id) is None:
                    pos = await self.persister.persist(event, new_room_creator=sender)
                    return event, pos
            # The same sender created a room with the same content in the same
            # millisecond (v12 room IDs are the create event's hash): move on one.
            origin_server_ts += 1

    async def _new_legacy_room_id(self) -> str:
        import secrets
        import string

        alphabet = string.ascii_letters
        while True:
            room_id = (
                "!" + "".join(secrets.choice(alphabet) for _ in range(18)) + ":" + self.server_name
            )
            if await self.store.get_room_version(room_id) is None:
                return room_id

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        txn: tuple[str, str, str] | None = None,
        redacts: str | None = None,
    ) -> tuple[str, int]:
        """Creates, authorises and persists an event; returns (event_id, stream position)."""
        room_version = await self.room_version(room_id)
        async with self.locks.hold(room_id):
            if txn is not None:
                existing = await self.store.get_event_id_for_txn(*txn)
                if existing is not None:
                    pe = await self.store.get_event(existing)
                    return existing, pe.stream_ordering if pe else 0
            state_ids = await self.store.get_current_state_ids(room_id)
            auth_keys = auth_types_for_event(room_version, event_type, sender, state_key, content)
            needed: dict[StateKey, str] = {k: state_ids[k] for k in auth_keys if k in state_ids}
            create_key = ("m.room.create", "")
            if create_key in state_ids:
                needed.setdefault(create_key, state_ids[create_key])
            loaded = await self.store.get_events(list(needed.values()))
            auth_state = {k: loaded[eid].event for k, eid in needed.items() if eid in loaded}
            extremities = sorted(
                await self.store.get_forward_extremities(room_id), key=lambda x: -x[1]
            )
            prev = extremities[:MAX_PREV_EVENTS]
            depth = max((d for _, d in prev), default=0) + 1
            auth_event_ids = [needed[k] for k in auth_keys if k in needed]
            event = self._build(
                room_version,
                room_id=room_id,
                sender=sender,
                type=event_type,
                state_key=state_key,
                content=content,
                prev_event_ids=[eid for eid, _ in prev],
                auth_event_ids=auth_event_ids,
                depth=depth,
                redacts=redacts,
            )
            self._check(event, auth_state)
            for check in self.content_checks.get(event_type, ()):
                await check(room_id, sender, state_key, content)
            # Redaction permission, thread roots, duplicate annotations (relations module).
            await validate_new_event(self.store, event, auth_state)
            pos = await self.persister.persist(event, txn=txn)
        return event.event_id, pos

    def _build(
        self, room_version: RoomVersion, origin_server_ts: int | None = None, **kwargs: Any
    ) -> Event:
        try:
            return build_event(
                room_version,
                server_name=self.server_name,
                signing_key=self.signing_key,
                origin_server_ts=self.clock_ms() if origin_server_ts is None else origin_server_ts,
                **kwargs,
            )
        except InvalidEventError as e:
            message = str(e)
            if "too large" in message or "bytes" in message:
                raise MatrixError(413, "M_TOO_LARGE", f"Event too large: {message}") from None
            raise MatrixError(400, "M_BAD_JSON", f"Invalid event: {message}") from None

    @staticmethod
    def _check(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
        try:
            check_auth_rules(event, auth_state)
        except AuthError as e:
            raise forbidden(e.reason) from None
