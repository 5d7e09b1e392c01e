"""Room aliases and the published room directory.

Reads (alias resolution, a room's visibility, /publicRooms) run on every process; the
changes (creating and deleting aliases, publishing rooms) run on the events writer, so
that one process serialises them and `reserve_alias` can hold an alias while a room
that will carry it is being created. Only aliases on this server are known (no
federation yet).

Shared as `ctx.extras["directory"]` (see `DirectoryHandler.install`); other modules use
`resolve_alias(alias) -> room_id | None`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs

from homeserver.events.auth import get_send_level, get_user_power_level
from homeserver.events.event import Event, StateKey
from homeserver.events.validation import is_valid_room_alias
from homeserver.http.errors import MatrixError, bad_param, forbidden, not_found
from storage.stores.accounts import AccountStore
from storage.stores.directory import DirectoryStore, PublishedRoom
from storage.stores.events import EventStore

if TYPE_CHECKING:
    from homeserver.context import HomeServerContext
    from homeserver.handlers.event_creation import EventCreationHandler

CANONICAL_ALIAS = "m.room.canonical_alias"
_CREATE_KEY: StateKey = ("m.room.create", "")
_POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")

AliasResolver = Callable[[str], Awaitable[str | None]]


def parse_room_alias(raw: Any) -> str:
    """A room alias from a client, by the appendix grammar; 400 M_INVALID_PARAM if not one."""
    if not isinstance(raw, str) or not is_valid_room_alias(raw) or raw.startswith("#:"):
        raise bad_param(f"Invalid room alias {raw!r}")
    return raw


def alias_server(alias: str) -> str:
    return alias.split(":", 1)[1]


async def check_canonical_alias_content(
    room_id: str, content: Mapping[str, Any], resolve: AliasResolver
) -> None:
    """`alias` and `alt_aliases` must be valid aliases that point to `room_id`.

    400 M_INVALID_PARAM for bad syntax, 400 M_BAD_ALIAS for an alias that does not point
    to the room (including aliases on other servers, which cannot be checked yet).
    """
    aliases: list[Any] = []
    alias = content.get("alias")
    if alias is not None and alias != "":
        aliases.append(alias)
    alt = content.get("alt_aliases")
    if alt is not None:
        if not isinstance(alt, list):
            raise bad_param("alt_aliases must be a list of room aliases")
        aliases.extend(alt)
    for candidate in aliases:
        parse_room_alias(candidate)
    for candidate in dict.fromkeys(aliases):
        if await resolve(candidate) != room_id:
            raise MatrixError(
                400, "M_BAD_ALIAS", f"The alias {candidate!r} does not point to this room"
            )


@attrs.frozen(slots=True)
class PublicRoomsQuery:
    limit: int
    since: str | None = None
    search_term: str | None = None
    # None: every room; otherwise the room types to list (None in the list: untyped rooms).
    room_types: tuple[str | None, ...] | None = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def plain_text_topic(content: Mapping[str, Any] | None) -> str | None:
    """The text/plain topic: from `m.topic` if it has one, else the `topic` string."""
    if content is None:
        return None
    block = content.get("m.topic")
    texts = block.get("m.text") if isinstance(block, Mapping) else None
    if isinstance(texts, list):
        for rep in texts:
            if isinstance(rep, Mapping) and rep.get("mimetype", "text/plain") == "text/plain":
                body = _text(rep.get("body"))
                if body is not None:
                    return body
    return _text(content.get("topic"))


def directory_entry(room: PublishedRoom) -> dict[str, Any]:
    """One `chunk` entry of /publicRooms."""
    state = room.state

    def field(event_type: str, key: str) -> Any:
        content = state.get(event_type)
        return content.get(key) if content is not None else None

    entry: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": field("m.room.history_visibility", "history_visibility")
        == "world_readable",
        "guest_can_join": field("m.room.guest_access", "guest_access") == "can_join",
    }
    optional = {
        "name": _text(field("m.room.name", "name")),
        "topic": plain_text_topic(state.get("m.room.topic")),
        "canonical_alias": _text(field(CANONICAL_ALIAS, "alias")),
        "avatar_url": _text(field("m.room.avatar", "url")),
        "join_rule": _text(field("m.room.join_rules", "join_rule")),
        "room_type": _text(field("m.room.create", "type")),
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


def _matches(entry: Mapping[str, Any], room: PublishedRoom, term: str) -> bool:
    alt = (room.state.get(CANONICAL_ALIAS) or {}).get("alt_aliases")
    texts = [entry.get("name"), entry.get("topic"), entry.get("canonical_alias")]
    if isinstance(alt, list):
        texts.extend(alt)
    return any(isinstance(t, str) and term in t.casefold() for t in texts)


# Rooms are listed by joined member count, largest first, then by room ID.
SortKey = tuple[int, str]


def _sort_key(entry: Mapping[str, Any]) -> SortKey:
    return (-int(entry["num_joined_members"]), str(entry["room_id"]))


def encode_batch_token(direction: str, key: SortKey) -> str:
    raw = json.dumps([direction, -key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_batch_token(token: str) -> tuple[str, SortKey]:
    """("n", key): the rooms after `key`; ("p", key): the rooms before it."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        direction, joined, room_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad_param("Invalid pagination token 'since'") from None
    if (
        direction not in ("n", "p")
        or isinstance(joined, bool)
        or not isinstance(joined, int)
        or not isinstance(room_id, str)
    ):
        raise bad_param("Invalid pagination token 'since'")
    return direction, (-joined, room_id)


def paginate(
    entries: Sequence[dict[str, Any]], limit: int, since: str | None
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(batch, next_batch, prev_batch) over `entries` sorted by `_sort_key`.

    Tokens name the sort key of the batch's edge, so pages stay put when rooms before
    them are added or removed.
    """
    keys = [_sort_key(e) for e in entries]
    if since is None:
        start = 0
        end = min(len(entries), limit)
    else:
        direction, edge = decode_batch_token(since)
        if direction == "n":
            start = next((i for i, k in enumerate(keys) if k > edge), len(keys))
            end = min(len(entries), start + limit)
        else:
            end = next((i for i, k in enumerate(keys) if k >= edge), len(keys))
            start = max(0, end - limit)
    batch = list(entries[start:end])
    next_batch = encode_batch_token("n", keys[end - 1]) if batch and end < len(entries) else None
    prev_batch = encode_batch_token("p", keys[start]) if batch and start > 0 else None
    return batch, next_batch, prev_batch


class DirectoryHandler:
    def __init__(
        self,
        server_name: str,
        store: DirectoryStore,
        event_store: EventStore,
        account_store: AccountStore,
        clock_ms: Callable[[], int],
        events: EventCreationHandler | None = None,
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.event_store = event_store
        self.account_store = account_store
        self.clock_ms = clock_ms
        # Writer only: aliases being given to rooms under creation.
        self._reserved: set[str] = set()
        if events is not None:
            events.add_content_check(CANONICAL_ALIAS, self._check_canonical_alias_event)

    @classmethod
    def install(cls, ctx: HomeServerContext) -> DirectoryHandler:
        """The process's shared handler, created on first use."""
        existing = ctx.extras.get("directory")
        if isinstance(existing, DirectoryHandler):
            return existing
        made = cls(
            ctx.server_name,
            DirectoryStore(ctx.db),
            ctx.event_store,
            ctx.account_store,
            ctx.clock_ms,
            ctx.event_creation,
        )
        ctx.extras["directory"] = made
        return made

    # -- aliases: reads -------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> str | None:
        """The room a local alias points to; None if unknown, malformed or not local."""
        if not isinstance(alias, str) or not is_valid_room_alias(alias):
            return None
        if alias_server(alias) != self.server_name:
            return None
        record = await self.store.get_alias(alias)
        return record.room_id if record is not None else None

    async def get_alias(self, raw_alias: str) -> dict[str, Any]:
        alias = parse_room_alias(raw_alias)
        room_id = await self.resolve_alias(alias)
        if room_id is None:
            raise not_found(f"Room alias {alias} not found")
        return {"room_id": room_id, "servers": [self.server_name]}

    async def get_local_aliases(self, user_id: str, room_id: str) -> list[str]:
        """The room's local aliases, for members and, in world-readable rooms, anyone."""
        if await self.event_store.get_room_version(room_id) is None:
            raise not_found("Room not found")
        member = await self.event_store.get_current_state_event(room_id, "m.room.member", user_id)
        if member is None or member.event.membership != "join":
            visibility = await self.event_store.get_current_state_event(
                room_id, "m.room.history_visibility", ""
            )
            readable = visibility is not None and (
                visibility.event.content.get("history_visibility") == "world_readable"
            )
            if not readable:
                raise forbidden("You are not a member of the room")
        return await self.store.get_aliases_for_room(room_id)

    # -- aliases: changes (events writer) -------------------------------------------------

    def new_local_alias(self, localpart: Any) -> str:
        """The alias `#localpart:server_name` for createRoom's `room_alias_name`."""
        if not isinstance(localpart, str):
            raise MatrixError(400, "M_BAD_JSON", "room_alias_name must be a string")
        return parse_room_alias(f"#{localpart}:{self.server_name}")

    @asynccontextmanager
    async def reserve_alias(self, alias: str, taken: MatrixError) -> AsyncIterator[None]:
        """Holds a free alias for the duration (raising `taken` if it is not free)."""
        in_use = await self.store.get_alias(alias) is not None
        if in_use or alias in self._reserved:
            raise taken
        self._reserved.add(alias)
        try:
            yield
        finally:
            self._reserved.discard(alias)

    async def store_reserved_alias(self, alias: str, room_id: str, creator: str) -> None:
        if not await self.store.create_alias(alias, room_id, creator, self.clock_ms()):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")

    async def create_alias(self, user_id: str, raw_alias: str, room_id: Any) -> None:
        alias = parse_room_alias(raw_alias)
        if alias_server(alias) != self.server_name:
            raise bad_param(f"Room aliases can only be created on {self.server_name}")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise bad_param("room_id must be a room ID")
        if await self.event_store.get_room_version(room_id) is None:
            raise not_found("Room not found")
        member = await self.event_store.get_current_state_event(room_id, "m.room.member", user_id)
        if not await self._is_admin(user_id) and (
            member is None or member.event.membership != "join"
        ):
            raise forbidden("You must be in the room to give it an alias")
        taken = MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")
        async with self.reserve_alias(alias, taken):
            await self.store_reserved_alias(alias, room_id, user_id)

    async def delete_alias(self, user_id: str, raw_alias: str) -> None:
        alias = parse_room_alias(raw_alias)
        record = (
            await self.store.get_alias(alias) if alias_server(alias) == self.server_name else None
        )
        if record is None:
            raise not_found(f"Room alias {alias} not found")
        if record.creator != user_id and not await self.may_manage_room(user_id, record.room_id):
            raise forbidden("Only the alias's creator or a room moderator may delete it")
        await self.store.delete_alias(alias)

    async def may_manage_room(self, user_id: str, room_id: str) -> bool:
        """Server admins, and joined members with the power to set the canonical alias."""
        if await self._is_admin(user_id):
            return True
        auth_state: dict[StateKey, Event] = {}
        for key in (_CREATE_KEY, _POWER_LEVELS_KEY, ("m.room.member", user_id)):
            found = await self.event_store.get_current_state_event(room_id, *key)
            if found is not None:
                auth_state[key] = found.event
        member = auth_state.get(("m.room.member", user_id))
        if member is None or member.membership != "join":
            return False
        needed = get_send_level(CANONICAL_ALIAS, "", auth_state.get(_POWER_LEVELS_KEY))
        return get_user_power_level(user_id, auth_state) >= needed

    async def _is_admin(self, user_id: str) -> bool:
        user = await self.account_store.get_user(user_id)
        return user is not None and user[1]

    async def _check_canonical_alias_event(
        self, room_id: str, sender: str, state_key: str | None, content: Mapping[str, Any]
    ) -> None:
        if state_key == "":
            await check_canonical_alias_content(room_id, content, self.resolve_alias)

    # -- the published room directory -----------------------------------------------------

    async def get_visibility(self, room_id: str) -> dict[str, Any]:
        published = await self.store.get_room_published(room_id)
        if published is None:
            raise not_found("Room not found")
        return {"visibility": "public" if published else "private"}

    async def set_visibility(self, user_id: str, room_id: str, visibility: str) -> None:
        if await self.event_store.get_room_version(room_id) is None:
            raise not_found("Room not found")
        if not await self.may_manage_room(user_id, room_id):
            raise forbidden("You may not change this room's visibility in the room directory")
        await self.publish(room_id, visibility == "public")

    async def publish(self, room_id: str, published: bool) -> None:
        if not await self.store.set_room_published(room_id, published):
            raise not_found("Room not found")

    async def public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        term = query.search_term.casefold() if query.search_term else None
        for room in await self.store.get_published_rooms():
            entry = directory_entry(room)
            if term is not None and not _matches(entry, room, term):
                continue
            if query.room_types is not None and entry.get("room_type") not in query.room_types:
                continue
            entries.append(entry)
        entries.sort(key=_sort_key)
        batch, next_batch, prev_batch = paginate(entries, query.limit, query.since)
        response: dict[str, Any] = {"chunk": batch, "total_room_count_estimate": len(entries)}
        if next_batch is not None:
            response["next_batch"] = next_batch
        if prev_batch is not None:
            response["prev_batch"] = prev_batch
        return response
