"""The authorisation rules for room versions 1–12.

The rules are written once, in the order the specification lists them, and every
difference between room versions is a question asked of the event's ``RoomVersion``
flags. Nothing here performs I/O: the caller supplies the state the rules consult
(``auth_state``) and, optionally, a callback for the rules that need signature
verification against remote server keys.

Decisions where the specification leaves room for interpretation:

* With no ``m.room.join_rules`` event (or no ``join_rule`` in it) the join rule is
  taken to be ``invite``.
* In room versions that accept stringy/floaty power levels, a top-level, ``events`` or
  ``notifications`` value that cannot be read as an integer is treated as absent (so the
  default applies). Invalid ``users`` values reject the power-levels event, as the rules
  require; in versions 1–5 a non-finite float anywhere rejects it too.
* ``state_default`` defaults to 50 even when the room has no power-levels event.
* Power-level alterations are detected on parsed values: ``"50"`` → ``50`` is no change.
* The v1–2 redaction rule (event ID domain comparison) applies to room versions whose
  event IDs are server-assigned, i.e. those whose IDs carry a domain.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import canonicaljson
import nacl.exceptions
import nacl.signing

from homeserver.events.event import Event, StateKey
from homeserver.events.power_levels import (
    LEVEL_DEFAULTS,
    TOP_LEVEL_KEYS,
    accepts_float_levels,
    is_non_finite_float,
    level_map,
    level_or_default,
    parse_level,
    top_level_levels,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

__all__ = [
    "AuthError",
    "SignatureVerifier",
    "auth_types_for_event",
    "check_auth_events",
    "check_auth_rules",
    "get_named_level",
    "get_send_level",
    "get_user_power_level",
    "room_creators",
]

CREATE: Final = "m.room.create"
MEMBER: Final = "m.room.member"
POWER_LEVELS: Final = "m.room.power_levels"
JOIN_RULES: Final = "m.room.join_rules"
THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
ALIASES: Final = "m.room.aliases"
REDACTION: Final = "m.room.redaction"

CREATE_KEY: Final[StateKey] = (CREATE, "")
POWER_LEVELS_KEY: Final[StateKey] = (POWER_LEVELS, "")
JOIN_RULES_KEY: Final[StateKey] = (JOIN_RULES, "")

AUTHORISER_KEY: Final = "join_authorised_via_users_server"

# Power level of a room creator when the room has no power-levels event (v1–11).
_CREATOR_DEFAULT_LEVEL: Final = 100

# (event, server_name) -> whether the event carries a valid signature from that server.
SignatureVerifier = Callable[[Event, str], bool]


class AuthError(Exception):
    """The event is not authorised; ``reason`` says which rule it failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject(reason: str) -> NoReturn:
    raise AuthError(reason)


# --------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------

_SERVER_NAME = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?",
    re.ASCII,
)


def _domain(identifier: str) -> str | None:
    """The part after the first ':' of a user, room or (v1–2) event ID."""
    _, sep, domain = identifier.partition(":")
    return domain if sep else None


def _is_valid_user_id(value: Any) -> bool:
    """A user ID under the historical (lenient) grammar, which servers must accept."""
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    if len(value.encode("utf-8")) > 255:
        return False
    localpart, sep, server_name = value[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return _SERVER_NAME.fullmatch(server_name) is not None


# --------------------------------------------------------------------------------------
# Reading the auth state
# --------------------------------------------------------------------------------------


def room_creators(create_event: Event) -> frozenset[str]:
    """The room's creators as defined by its room version.

    v1–10: ``content.creator``; v11: the create event's sender; v12+: the sender plus
    any string entries of ``content.additional_creators``.
    """
    rv = create_event.room_version
    if not rv.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset([creator]) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if rv.creators_have_infinite_power:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return frozenset(creators)


def _membership(auth_state: Mapping[StateKey, Event], user_id: str) -> str:
    """A user's current membership; ``leave`` when they have no member event."""
    event = auth_state.get((MEMBER, user_id))
    if event is None:
        return "leave"
    return event.membership or "leave"


def _join_rule(auth_state: Mapping[StateKey, Event]) -> str:
    event = auth_state.get(JOIN_RULES_KEY)
    rule = event.content.get("join_rule") if event is not None else None
    return rule if isinstance(rule, str) else "invite"


def get_user_power_level(user_id: str, auth_state: Mapping[StateKey, Event]) -> int | float:
    """A user's power level; ``math.inf`` for creators where the room version says so."""
    create = auth_state.get(CREATE_KEY)
    if create is not None and create.room_version.creators_have_infinite_power:
        if user_id in room_creators(create):
            return math.inf
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    if power_levels is not None:
        rv = power_levels.room_version
        content = power_levels.content
        users = level_map(content.get("users"), rv)
        if user_id in users:
            return users[user_id]
        return level_or_default(content, "users_default", LEVEL_DEFAULTS["users_default"], rv)
    if create is not None and user_id in room_creators(create):
        return _CREATOR_DEFAULT_LEVEL
    return 0


def get_send_level(event_type: str, state_key: str | None, power_levels: Event | None) -> int:
    """The *required power level* to send an event of this type (state or not)."""
    if power_levels is None:
        content: Mapping[str, Any] = {}
        events: dict[str, int] = {}
        rv = None
    else:
        content = power_levels.content
        rv = power_levels.room_version
        events = level_map(content.get("events"), rv)
    if event_type in events:
        return events[event_type]
    name = "state_default" if state_key is not None else "events_default"
    if rv is None:
        return LEVEL_DEFAULTS[name]
    return level_or_default(content, name, LEVEL_DEFAULTS[name], rv)


def get_named_level(auth_state: Mapping[StateKey, Event], name: str, default: int) -> int:
    """A top-level level such as ``invite``, ``kick``, ``ban``, ``redact``, ``state_default``."""
    power_levels = auth_state.get(POWER_LEVELS_KEY)
    if power_levels is None:
        return default
    return level_or_default(power_levels.content, name, default, power_levels.room_version)


def _named(auth_state: Mapping[StateKey, Event], name: str) -> int:
    return get_named_level(auth_state, name, LEVEL_DEFAULTS[name])


# --------------------------------------------------------------------------------------
# Auth events selection
# --------------------------------------------------------------------------------------


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> list[StateKey]:
    """The (type, state_key) pairs an event's ``auth_events`` should be drawn from."""
    if event_type == CREATE:
        return []
    selected: list[StateKey] = []
    if not room_version.room_id_is_create_event_id:
        selected.append(CREATE_KEY)
    selected.append(POWER_LEVELS_KEY)
    selected.append((MEMBER, sender))
    if event_type == MEMBER:
        membership = content.get("membership")
        if state_key is not None:
            selected.append((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            selected.append(JOIN_RULES_KEY)
        if membership == "invite":
            token = _third_party_invite_token(content)
            if token is not None:
                selected.append((THIRD_PARTY_INVITE, token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get(AUTHORISER_KEY)
            if isinstance(authoriser, str):
                selected.append((MEMBER, authoriser))
    # The sender, target and authorising user may coincide.
    return list(dict.fromkeys(selected))


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


# --------------------------------------------------------------------------------------
# Checks on the event's listed auth events
# --------------------------------------------------------------------------------------


def check_auth_events(
    event: Event,
    auth_events: Sequence[Event],
    create_event: Event | None,
    verify_signature: SignatureVerifier | None = None,
) -> None:
    """Authorise ``event`` against the events it lists in ``auth_events``.

    First the checks on the auth events themselves (duplicates, selection, rejection,
    presence of the create event, room IDs), then :func:`check_auth_rules` over the map
    they form. ``create_event`` is consulted only in room versions where the room ID is
    the create event's ID, where it is not among the auth events; elsewhere the create
    event must be listed.
    """
    rv = event.room_version
    if event.type == CREATE:
        check_auth_rules(event, {}, verify_signature)
        return

    if rv.room_id_is_create_event_id:
        _check_room_id_names_create_event(event, create_event)

    auth_state: dict[StateKey, Event] = {}
    allowed = set(
        auth_types_for_event(rv, event.type, event.sender, event.state_key, event.content)
    )
    for auth_event in auth_events:
        if auth_event.state_key is None:
            _reject(f"auth event {auth_event.event_id} is not a state event")
        key = auth_event.key
        if key in auth_state:
            _reject(f"duplicate auth events for {key}")
        auth_state[key] = auth_event
    for key, auth_event in auth_state.items():
        if key not in allowed:
            _reject(f"auth event {auth_event.event_id} {key} is not one the event may cite")
    for auth_event in auth_state.values():
        if auth_event.rejected:
            _reject(f"auth event {auth_event.event_id} was rejected")
    if not rv.room_id_is_create_event_id and CREATE_KEY not in auth_state:
        _reject("no m.room.create event among the auth events")
    for auth_event in auth_state.values():
        if auth_event.pdu.get("room_id") != event.pdu.get("room_id"):
            _reject(f"auth event {auth_event.event_id} belongs to another room")

    if rv.room_id_is_create_event_id:
        assert create_event is not None  # checked above
        auth_state[CREATE_KEY] = create_event
    check_auth_rules(event, auth_state, verify_signature)


def _check_room_id_names_create_event(event: Event, create: Event | None) -> None:
    """v12: the room ID must be the ID of an accepted create event with sigil '!'."""
    if create is None or create.type != CREATE or create.state_key != "":
        _reject("room has no create event")
    if create.rejected:
        _reject("the room's create event was rejected")
    if not create.event_id.startswith("$") or event.pdu.get("room_id") != "!" + create.event_id[1:]:
        _reject("room_id is not derived from the create event ID")


# --------------------------------------------------------------------------------------
# The authorisation rules
# --------------------------------------------------------------------------------------


def check_auth_rules(
    event: Event,
    auth_state: Mapping[StateKey, Event],
    verify_signature: SignatureVerifier | None = None,
) -> None:
    """Authorise ``event`` against ``auth_state``; raise :class:`AuthError` if not allowed.

    ``auth_state`` maps (type, state_key) to the events the rules consult, and always
    includes the room's create event (for v12 the caller adds it). Rules that need
    signature verification call ``verify_signature(event, server_name)``; they are
    skipped when it is None.
    """
    rv = event.room_version

    if verify_signature is not None:
        _check_origin_signatures(event, verify_signature)

    if event.type == CREATE:
        _check_create_event(event)
        return

    create = auth_state.get(CREATE_KEY)
    if create is None:
        _reject("no m.room.create event in the auth state")
    if rv.room_id_is_create_event_id:
        _check_room_id_names_create_event(event, create)

    _check_federation_allowed(event, create)

    if rv.special_case_aliases_auth and event.type == ALIASES:
        _check_aliases_event(event)
        return

    if event.type == MEMBER:
        _check_member_event(event, auth_state, create, verify_signature)
        return

    if _membership(auth_state, event.sender) != "join":
        _reject(f"sender {event.sender} is not joined to the room")

    sender_level = get_user_power_level(event.sender, auth_state)

    if event.type == THIRD_PARTY_INVITE:
        if sender_level < _named(auth_state, "invite"):
            _reject("sender may not invite")
        return

    required = get_send_level(event.type, event.state_key, auth_state.get(POWER_LEVELS_KEY))
    if required > sender_level:
        _reject(f"sending {event.type} needs power level {required}")

    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        _reject("state_key names a user other than the sender")

    if event.type == POWER_LEVELS:
        _check_power_levels_event(event, auth_state, create, sender_level)
        return

    if event.type == REDACTION and not rv.uses_event_id_hash:
        _check_redaction_by_domain(event, sender_level, auth_state)
        return


def _check_origin_signatures(event: Event, verify_signature: SignatureVerifier) -> None:
    """The event must be signed by the sender's server (and, v1–2, the event ID's)."""
    sender_domain = _domain(event.sender)
    if sender_domain is None or not verify_signature(event, sender_domain):
        _reject("event is not signed by the sender's server")
    if not event.room_version.uses_event_id_hash:
        id_domain = _domain(event.event_id)
        if id_domain is None or not verify_signature(event, id_domain):
            _reject("event is not signed by the server that assigned its event ID")


def _check_create_event(event: Event) -> None:
    rv = event.room_version
    content = event.content
    if event.pdu.get("prev_events"):
        _reject("create event has prev_events")
    if rv.room_id_is_create_event_id:
        if "room_id" in event.pdu:
            _reject("create event has a room_id")
    else:
        room_domain = _domain(str(event.pdu.get("room_id", "")))
        if room_domain is None or room_domain != _domain(event.sender):
            _reject("room_id domain does not match the sender's")
    if "room_version" in content and not (
        isinstance(content["room_version"], str) and content["room_version"] in KNOWN_ROOM_VERSIONS
    ):
        _reject("unrecognised room_version")
    if not rv.implicit_room_creator and "creator" not in content:
        _reject("create event has no creator")
    if rv.creators_have_infinite_power and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(_is_valid_user_id(u) for u in extra):
            _reject("additional_creators is not a list of user IDs")


def _check_federation_allowed(event: Event, create: Event) -> None:
    federates = create.content.get("m.federate") is not False
    if not federates and _domain(event.sender) != _domain(create.sender):
        _reject("room does not federate and sender is from another server")


def _check_aliases_event(event: Event) -> None:
    """v1–5: only a server may set the aliases keyed by its own name."""
    if event.state_key is None:
        _reject("m.room.aliases without state_key")
    if event.state_key != _domain(event.sender):
        _reject("m.room.aliases state_key is not the sender's server")


# --- m.room.member --------------------------------------------------------------------


def _check_member_event(
    event: Event,
    auth_state: Mapping[StateKey, Event],
    create: Event,
    verify_signature: SignatureVerifier | None,
) -> None:
    rv = event.room_version
    membership = event.content.get("membership")
    if event.state_key is None or "membership" not in event.content:
        _reject("member event lacks state_key or membership")

    if rv.restricted_join_rule and AUTHORISER_KEY in event.content and verify_signature is not None:
        authoriser = event.content[AUTHORISER_KEY]
        server = _domain(authoriser) if isinstance(authoriser, str) else None
        if server is None or not verify_signature(event, server):
            _reject("not signed by the server of join_authorised_via_users_server")

    if membership == "join":
        _check_join(event, auth_state, create)
    elif membership == "invite":
        _check_invite(event, auth_state)
    elif membership == "leave":
        _check_leave(event, auth_state)
    elif membership == "ban":
        _check_ban(event, auth_state)
    elif membership == "knock" and rv.knock_join_rule:
        _check_knock(event, auth_state)
    else:
        _reject(f"unknown membership {membership!r}")


def _check_join(event: Event, auth_state: Mapping[StateKey, Event], create: Event) -> None:
    rv = event.room_version
    target = event.state_key
    # The creator's own join, directly after the create event.
    first_creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
    if event.prev_event_ids == [create.event_id] and target == first_creator:
        return
    if event.sender != target:
        _reject("cannot join on behalf of another user")
    current = _membership(auth_state, target)
    if current == "ban":
        _reject("sender is banned")

    join_rule = _join_rule(auth_state)
    invite_like = {"invite"} | ({"knock"} if rv.knock_join_rule else set())
    restricted_like = ({"restricted"} if rv.restricted_join_rule else set()) | (
        {"knock_restricted"} if rv.knock_restricted_join_rule else set()
    )
    if join_rule in invite_like:
        if current in ("invite", "join"):
            return
    elif join_rule in restricted_like:
        if current in ("invite", "join"):
            return
        authoriser = event.content.get(AUTHORISER_KEY)
        if not isinstance(authoriser, str) or _membership(auth_state, authoriser) != "join":
            _reject("restricted join not authorised by a joined member")
        if get_user_power_level(authoriser, auth_state) < _named(auth_state, "invite"):
            _reject("restricted join authoriser may not invite")
        return
    elif join_rule == "public":
        return
    _reject(f"join not allowed under join rule {join_rule!r}")


def _check_invite(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    target = event.state_key
    assert target is not None
    if "third_party_invite" in event.content:
        _check_third_party_invite_claim(event, auth_state)
        return
    if _membership(auth_state, event.sender) != "join":
        _reject("inviter is not joined")
    if _membership(auth_state, target) in ("join", "ban"):
        _reject("invitee is already joined or banned")
    if get_user_power_level(event.sender, auth_state) < _named(auth_state, "invite"):
        _reject("sender may not invite")


def _check_third_party_invite_claim(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    target = event.state_key
    assert target is not None
    if _membership(auth_state, target) == "ban":
        _reject("invitee is banned")
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        _reject("third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        _reject("third_party_invite.signed lacks mxid or token")
    if mxid != target:
        _reject("third_party_invite mxid does not match the invitee")
    tpi = auth_state.get((THIRD_PARTY_INVITE, token))
    if tpi is None:
        _reject("no m.room.third_party_invite for the token")
    if tpi.sender != event.sender:
        _reject("sender did not issue the m.room.third_party_invite")
    if not _third_party_signature_matches(signed, _third_party_public_keys(tpi)):
        _reject("third_party_invite signature does not match any public key")


def _check_leave(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    rv = event.room_version
    target = event.state_key
    assert target is not None
    if event.sender == target:
        may_leave_from = {"invite", "join"} | ({"knock"} if rv.knock_join_rule else set())
        if _membership(auth_state, target) not in may_leave_from:
            _reject("cannot leave a room one is not in, invited to or knocking on")
        return
    if _membership(auth_state, event.sender) != "join":
        _reject("sender is not joined")
    sender_level = get_user_power_level(event.sender, auth_state)
    if _membership(auth_state, target) == "ban" and sender_level < _named(auth_state, "ban"):
        _reject("sender may not unban")
    if sender_level < _named(auth_state, "kick"):
        _reject("sender may not kick")
    if get_user_power_level(target, auth_state) >= sender_level:
        _reject("target's power level is not below the sender's")


def _check_ban(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    target = event.state_key
    assert target is not None
    if _membership(auth_state, event.sender) != "join":
        _reject("sender is not joined")
    sender_level = get_user_power_level(event.sender, auth_state)
    if sender_level < _named(auth_state, "ban"):
        _reject("sender may not ban")
    if get_user_power_level(target, auth_state) >= sender_level:
        _reject("target's power level is not below the sender's")


def _check_knock(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    rv = event.room_version
    knockable = {"knock"} | ({"knock_restricted"} if rv.knock_restricted_join_rule else set())
    if _join_rule(auth_state) not in knockable:
        _reject("room does not allow knocking")
    if event.sender != event.state_key:
        _reject("cannot knock on behalf of another user")
    if _membership(auth_state, event.sender) in ("ban", "invite", "join"):
        _reject("sender is banned, invited or joined")


# --- third-party invite signatures -----------------------------------------------------


def _third_party_public_keys(tpi: Event) -> list[str]:
    keys: list[str] = []
    single = tpi.content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    listed = tpi.content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            if isinstance(key, str):
                keys.append(key)
    return keys


def _unpadded_b64decode(value: str) -> bytes | None:
    """Decode (unpadded) standard or URL-safe base64; None if it is neither."""
    if not value.isascii():
        return None
    padded = value + "=" * (-len(value) % 4)
    alphabet = padded.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(alphabet, validate=True)
    except (binascii.Error, ValueError):
        return None


def _third_party_signature_matches(signed: Mapping[str, Any], public_keys: Sequence[str]) -> bool:
    """Whether any signature on ``signed`` verifies under any of ``public_keys`` (ed25519)."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    try:
        message = canonicaljson.encode_canonical_json(
            {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        )
    except (TypeError, ValueError):
        return False
    verify_keys: list[nacl.signing.VerifyKey] = []
    for key in public_keys:
        raw = _unpadded_b64decode(key)
        if raw is not None and len(raw) == 32:
            verify_keys.append(nacl.signing.VerifyKey(raw))
    for by_key_id in signatures.values():
        if not isinstance(by_key_id, Mapping):
            continue
        for signature in by_key_id.values():
            sig = _unpadded_b64decode(signature) if isinstance(signature, str) else None
            if sig is None or len(sig) != 64:
                continue
            for verify_key in verify_keys:
                try:
                    verify_key.verify(message, sig)
                except nacl.exceptions.BadSignatureError:
                    continue
                return True
    return False


# --- m.room.power_levels ---------------------------------------------------------------


def _check_power_levels_content(event: Event, create: Event) -> None:
    """The well-formedness rules for new power-levels content."""
    rv = event.room_version
    content = event.content
    if rv.integer_power_levels:
        for key in TOP_LEVEL_KEYS:
            if key in content and parse_level(content[key], rv) is None:
                _reject(f"power levels {key} is not an integer")
        for key in ("events", "notifications"):
            if key in content:
                value = content[key]
                if not isinstance(value, Mapping) or any(
                    parse_level(v, rv) is None for v in value.values()
                ):
                    _reject(f"power levels {key} is not an object of integers")
    elif accepts_float_levels(rv):
        values = [content.get(k) for k in TOP_LEVEL_KEYS]
        for key in ("events", "notifications", "users"):
            if isinstance(content.get(key), Mapping):
                values.extend(content[key].values())
        if any(is_non_finite_float(v) for v in values):
            _reject("power levels contain a non-finite number")

    if "users" in content:
        users = content["users"]
        if not isinstance(users, Mapping):
            _reject("power levels users is not an object")
        for user_id, level in users.items():
            if not _is_valid_user_id(user_id):
                _reject(f"power levels users has invalid user ID {user_id!r}")
            if parse_level(level, rv) is None:
                _reject(f"power level for {user_id} is not an integer")
        if rv.creators_have_infinite_power and room_creators(create) & set(users):
            _reject("power levels users may not list room creators")


def _check_power_levels_event(
    event: Event,
    auth_state: Mapping[StateKey, Event],
    create: Event,
    sender_level: int | float,
) -> None:
    rv = event.room_version
    _check_power_levels_content(event, create)

    previous = auth_state.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    old, new = previous.content, event.content
    old_rv = previous.room_version

    old_top, new_top = top_level_levels(old, old_rv), top_level_levels(new, rv)
    for key in TOP_LEVEL_KEYS:
        if old_top.get(key) == new_top.get(key):
            continue
        if key in old_top and old_top[key] > sender_level:
            _reject(f"sender may not change {key} from {old_top[key]}")
        if key in new_top and new_top[key] > sender_level:
            _reject(f"sender may not set {key} to {new_top[key]}")

    mapped = ["events"] + (["notifications"] if rv.limit_notifications_power_levels else [])
    for prop in mapped:
        _check_level_map_changes(
            prop, level_map(old.get(prop), old_rv), level_map(new.get(prop), rv), sender_level
        )

    old_users, new_users = level_map(old.get("users"), old_rv), level_map(new.get("users"), rv)
    for user_id, level in old_users.items():
        if user_id == event.sender or new_users.get(user_id) == level:
            continue
        if level >= sender_level:
            _reject(f"sender may not change the power level of {user_id}")
    for user_id, level in new_users.items():
        if old_users.get(user_id) != level and level > sender_level:
            _reject(f"sender may not give {user_id} power level {level}")


def _check_level_map_changes(
    prop: str, old: Mapping[str, int], new: Mapping[str, int], sender_level: int | float
) -> None:
    for key, level in old.items():
        if new.get(key) != level and level > sender_level:
            _reject(f"sender may not change {prop}[{key!r}] from {level}")
    for key, level in new.items():
        if old.get(key) != level and level > sender_level:
            _reject(f"sender may not set {prop}[{key!r}] to {level}")


# --- m.room.redaction (v1–2) -------------------------------------------------------------


def _check_redaction_by_domain(
    event: Event, sender_level: int | float, auth_state: Mapping[StateKey, Event]
) -> None:
    if sender_level >= _named(auth_state, "redact"):
        return
    redacts = event.redacts
    redacted_domain = _domain(redacts) if redacts is not None else None
    if redacted_domain is not None and redacted_domain == _domain(event.event_id):
        return
    _reject("sender may not redact events from another server")
