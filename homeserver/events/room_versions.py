"""Room versions 1–12 and the properties in which they differ.

Each behaviour that changes between versions is a named flag here, so that the
formats, auth rules and state resolution read one rule set and consult flags
instead of branching on version strings.
"""

from __future__ import annotations

import enum

import attrs


class EventIdFormat(enum.Enum):
    # v1, v2: "$localpart:server", assigned by the origin server.
    SERVER_ASSIGNED = 1
    # v3: "$" + standard unpadded base64 of the reference hash.
    REFERENCE_HASH_BASE64 = 2
    # v4+: "$" + URL-safe unpadded base64 of the reference hash.
    REFERENCE_HASH_URLSAFE = 3


class StateResolutionAlgorithm(enum.Enum):
    V1 = 1
    V2 = 2
    # v2.1 (room version 12): v2 plus starting the iterative auth checks from an
    # empty state and the conflicted state subgraph.
    V2_1 = 3


class RedactionAlgorithm(enum.Enum):
    V1 = 1  # versions 1–5
    V6 = 6  # versions 6–8: drops aliases from m.room.aliases
    V9 = 9  # versions 9–10: keeps join_authorised_via_users_server
    V11 = 11  # versions 11+: keeps more content, drops `origin`, `membership`, `prev_state`


@attrs.frozen(slots=True)
class RoomVersion:
    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResolutionAlgorithm
    redaction: RedactionAlgorithm
    # v5+: enforce signing key validity (valid_until_ts).
    enforce_key_validity: bool
    # v6+: special-case aliases auth rule removed; integer-only canonical JSON; notifications
    # key in power levels is protected by redaction.
    special_case_aliases_auth: bool
    strict_canonicaljson: bool
    limit_notifications_power_levels: bool
    # v7+: knocking.
    knock_join_rule: bool
    # v8+: restricted join rule.
    restricted_join_rule: bool
    # v10+: knock_restricted join rule.
    knock_restricted_join_rule: bool
    # v10+: power levels must be integers, not strings.
    integer_power_levels: bool
    # v11+: m.room.create has no `creator` key (sender is the creator); redaction
    # `redacts` moves into content.
    implicit_room_creator: bool
    updated_redaction_rules: bool
    # v12: room ID is the create event's reference hash; creators have infinite power;
    # create event is not selected into auth_events.
    room_id_is_create_event_id: bool
    creators_have_infinite_power: bool

    @property
    def uses_event_id_hash(self) -> bool:
        return self.event_id_format is not EventIdFormat.SERVER_ASSIGNED


def _v(
    identifier: str,
    *,
    fmt: EventIdFormat,
    state_res: StateResolutionAlgorithm,
    redaction: RedactionAlgorithm,
    n: int,
) -> RoomVersion:
    return RoomVersion(
        identifier=identifier,
        event_id_format=fmt,
        state_res=state_res,
        redaction=redaction,
        enforce_key_validity=n >= 5,
        special_case_aliases_auth=n < 6,
        strict_canonicaljson=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        knock_restricted_join_rule=n >= 10,
        integer_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        updated_redaction_rules=n >= 11,
        room_id_is_create_event_id=n >= 12,
        creators_have_infinite_power=n >= 12,
    )


def _redaction_for(n: int) -> RedactionAlgorithm:
    if n >= 11:
        return RedactionAlgorithm.V11
    if n >= 9:
        return RedactionAlgorithm.V9
    if n >= 6:
        return RedactionAlgorithm.V6
    return RedactionAlgorithm.V1


def _build() -> dict[str, RoomVersion]:
    versions = {}
    for n in range(1, 13):
        if n <= 2:
            fmt = EventIdFormat.SERVER_ASSIGNED
        elif n == 3:
            fmt = EventIdFormat.REFERENCE_HASH_BASE64
        else:
            fmt = EventIdFormat.REFERENCE_HASH_URLSAFE
        if n == 1:
            sr = StateResolutionAlgorithm.V1
        elif n >= 12:
            sr = StateResolutionAlgorithm.V2_1
        else:
            sr = StateResolutionAlgorithm.V2
        versions[str(n)] = _v(str(n), fmt=fmt, state_res=sr, redaction=_redaction_for(n), n=n)
    return versions


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = _build()

# The spec (v1.19) recommends room version 12 as the default for new rooms.
DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion | None:
    return KNOWN_ROOM_VERSIONS.get(identifier)
