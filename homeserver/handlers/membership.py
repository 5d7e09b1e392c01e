"""Membership changes on the events writer: join, invite, leave, kick, ban, unban, knock.

The room's auth rules have the last word (`EventCreationHandler.send` applies them and
answers 403 M_FORBIDDEN); this handler adds what the rules leave to the server:

* restricted joins (`restricted` / `knock_restricted`): the joining server checks the
  `allow` conditions against its own view of the allow-listed rooms and names, in
  `join_authorised_via_users_server`, a local member of the room who may invite;
* guest access: a guest joins only rooms whose `m.room.guest_access` is `can_join`, and
  when a room stops being `can_join` its joined local guests are made to leave;
* request-level checks the rules cannot express (kicking a user who is not in the
  room, unbanning a user who is not banned).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from homeserver.events.auth import AUTHORISER_KEY, get_named_level, get_user_power_level
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import RoomVersion
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.http.errors import MatrixError, bad_param, forbidden, not_found
from storage.stores.accounts import AccountStore
from storage.stores.events import EventStore
from storage.stores.room_extras import RoomExtrasStore

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")
GUEST_ACCESS_KEY: StateKey = ("m.room.guest_access", "")

# action -> the membership its event sets.
ACTIONS: Mapping[str, str] = {
    "join": "join",
    "invite": "invite",
    "leave": "leave",
    "kick": "leave",
    "ban": "ban",
    "unban": "leave",
    "knock": "knock",
}


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class MembershipHandler:
    def __init__(
        self,
        events: EventCreationHandler,
        store: EventStore,
        server_name: str,
        *,
        accounts: AccountStore | None = None,
    ) -> None:
        self.events = events
        self.store = store
        self.server_name = server_name
        # Tells guests from full accounts; without it no guest is ever removed.
        self.accounts = accounts

    async def update_membership(
        self,
        action: str,
        sender: str,
        room_id: str,
        target: str,
        *,
        reason: str | None = None,
        is_guest: bool = False,
    ) -> dict[str, Any]:
        membership = ACTIONS.get(action)
        if membership is None:
            raise bad_param(f"Unknown membership action {action!r}")
        rv = await self.events.room_version(room_id)
        state = await self._state(room_id, {target, sender})
        current = _membership_of(state, target)
        content: dict[str, Any] = {"membership": membership}
        if reason is not None:
            content["reason"] = reason

        if action == "join":
            if is_guest and _guest_access(state) != "can_join":
                raise forbidden("Guest access is not allowed in this room")
            authoriser = await self._restricted_join_authoriser(rv, room_id, target, current, state)
            if authoriser is not None:
                content[AUTHORISER_KEY] = authoriser
            # Keep the profile the user shows in this room across re-joins.
            previous = state.get((MEMBER, target))
            if previous is not None and current == "join":
                for key in ("displayname", "avatar_url"):
                    value = previous.content.get(key)
                    if isinstance(value, str):
                        content[key] = value
        elif action == "knock":
            if not rv.knock_join_rule:
                raise forbidden(f"Room version {rv.identifier} does not support knocking")
            if is_guest:
                raise forbidden("Guests may not knock")
        elif action == "kick":
            if current not in ("join", "invite", "knock"):
                raise forbidden(f"{target} is not in the room")
        elif action == "unban":
            if current != "ban":
                raise forbidden(f"{target} is not banned")

        event_id, _ = await self.events.send(room_id, sender, MEMBER, content, state_key=target)
        return {"event_id": event_id, "room_id": room_id}

    async def remove_guests_if_disallowed(self, room_id: str) -> list[str]:
        """After a change of `m.room.guest_access`: unless the room is still `can_join`,
        every local guest joined to it leaves (the spec's server behaviour). Returns them.

        Each guest sends its own leave, which the auth rules always allow a joined member.
        """
        if self.accounts is None:
            return []
        state = await self._state(room_id, None)
        if _guest_access(state) == "can_join":
            return []
        joined_here = [
            member
            for (event_type, member), event in state.items()
            if event_type == MEMBER
            and event.membership == "join"
            and _server_of(member) == self.server_name
        ]
        removed: list[str] = []
        for guest in sorted(await self.accounts.get_guests(joined_here)):
            try:
                await self.events.send(
                    room_id, guest, MEMBER, {"membership": "leave"}, state_key=guest
                )
            except MatrixError as e:
                # The state change itself stands; one guest failing must not undo it.
                logger.warning(
                    "could not remove guest from room",
                    extra={"room_id": room_id, "user_id": guest, "error": e.errcode},
                )
            else:
                removed.append(guest)
        return removed

    async def forget(
        self, user_id: str, room_id: str, extras: RoomExtrasStore, now_ms: int
    ) -> None:
        """Forget a room the user has left (400 M_UNKNOWN while they are joined)."""
        memberships = await extras.get_user_memberships(user_id, room_id)
        if not memberships:
            raise not_found("You have never been in this room")
        if memberships[-1].membership == "join":
            raise MatrixError(400, "M_UNKNOWN", f"User {user_id} is in room {room_id}")
        await extras.forget_room(user_id, room_id, now_ms)

    async def _state(self, room_id: str, members: set[str] | None) -> dict[StateKey, Event]:
        """Current create, power levels, join rules, guest access and member events
        (of `members`, or every member when None)."""
        ids = await self.store.get_current_state_ids(room_id)
        wanted = {
            k: eid
            for k, eid in ids.items()
            if k
            in (
                ("m.room.create", ""),
                ("m.room.power_levels", ""),
                JOIN_RULES_KEY,
                GUEST_ACCESS_KEY,
            )
            or (k[0] == MEMBER and (members is None or k[1] in members))
        }
        loaded = await self.store.get_events(list(wanted.values()))
        return {k: loaded[eid].event for k, eid in wanted.items() if eid in loaded}

    async def _restricted_join_authoriser(
        self,
        rv: RoomVersion,
        room_id: str,
        user_id: str,
        current: str | None,
        state: Mapping[StateKey, Event],
    ) -> str | None:
        """For a restricted join: check `allow`, and pick a local member who may invite."""
        join_rules = state.get(JOIN_RULES_KEY)
        rule = join_rules.content.get("join_rule") if join_rules is not None else None
        restricted = (rule == "restricted" and rv.restricted_join_rule) or (
            rule == "knock_restricted" and rv.knock_restricted_join_rule
        )
        # Invited (or already joined) users join as under the invite rule.
        if not restricted or current in ("invite", "join"):
            return None
        assert join_rules is not None
        if not await self._meets_allow_conditions(user_id, join_rules.content.get("allow")):
            raise forbidden("You do not meet the conditions to join this room")
        state = await self._state(room_id, None)
        invite_level = get_named_level(state, "invite", 0)
        candidates: list[tuple[float, str]] = []
        for (event_type, member), event in state.items():
            if event_type != MEMBER or event.membership != "join":
                continue
            if _server_of(member) != self.server_name:
                continue
            level = get_user_power_level(member, state)
            if level >= invite_level:
                candidates.append((level, member))
        if not candidates:
            raise forbidden("No user on this server can authorise joins to this room")
        # The most powerful (creators: infinite) is the least likely to lose the right.
        candidates.sort(key=lambda c: (-c[0], c[1]))
        return candidates[0][1]

    async def _meets_allow_conditions(self, user_id: str, allow: Any) -> bool:
        if not isinstance(allow, list):
            return False
        rooms = await self.store.get_rooms_for_user(user_id)
        for condition in allow:
            if not isinstance(condition, Mapping) or condition.get("type") != "m.room_membership":
                continue
            allowed_room = condition.get("room_id")
            if isinstance(allowed_room, str) and rooms.get(allowed_room) == "join":
                return True
        return False


def _membership_of(state: Mapping[StateKey, Event], user_id: str) -> str | None:
    event = state.get((MEMBER, user_id))
    return event.membership if event is not None else None


def _guest_access(state: Mapping[StateKey, Event]) -> str | None:
    event = state.get(GUEST_ACCESS_KEY)
    value = event.content.get("guest_access") if event is not None else None
    return value if isinstance(value, str) else None
