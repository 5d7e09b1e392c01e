"""Building new, hashed and signed PDUs in the exact format of each room version."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from typing import Any

from signedjson.types import SigningKey

from homeserver.events.canonical import InvalidEventError, check_canonical_json
from homeserver.events.event import Event
from homeserver.events.hashing import compute_event_id, room_id_from_create_event_id
from homeserver.events.redaction import resolve_room_version
from homeserver.events.room_versions import RoomVersion
from homeserver.events.signing import sign_event
from homeserver.events.validation import validate_pdu_size

__all__ = ["MAX_DEPTH_V1", "MAX_DEPTH_V6", "build_event", "room_id_for_create_event"]

# Depth ceilings: v1–5 allow up to 2**63 - 1; v6+ (strict canonical JSON) 2**53 - 1.
MAX_DEPTH_V1 = 2**63 - 1
MAX_DEPTH_V6 = 2**53 - 1

_OPAQUE_ALPHABET = string.ascii_letters + string.digits


def _opaque_id(length: int = 18) -> str:
    return "".join(secrets.choice(_OPAQUE_ALPHABET) for _ in range(length))


def _references(
    event_ids: Sequence[str],
    rv: RoomVersion,
    hashes: Mapping[str, Mapping[str, Any]] | None,
) -> list[Any]:
    if rv.uses_event_id_hash:
        return list(event_ids)
    # v1–2: [event_id, {"sha256": ...}] pairs; unknown hashes are given as {}.
    known = hashes or {}
    return [[eid, dict(known.get(eid, {}))] for eid in event_ids]


def build_event(
    room_version: RoomVersion | str,
    *,
    sender: str,
    type: str,
    content: Mapping[str, Any],
    server_name: str,
    signing_key: SigningKey,
    origin_server_ts: int,
    depth: int,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    room_id: str | None,
    state_key: str | None = None,
    redacts: str | None = None,
    prev_event_hashes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Event:
    """Build a complete, hashed and signed PDU and return it as an :class:`Event`.

    Format per version:

    * v1–2: a server-assigned ``event_id`` ("$<random>:<server_name>") inside the PDU;
      ``prev_events``/``auth_events`` are ``[event_id, {hashes}]`` pairs, the hashes
      taken from ``prev_event_hashes`` (keyed by event ID, for prev and auth events).
    * v3+: no ``event_id`` key; the ID is derived from the reference hash.
    * v1–10: ``redacts`` is a top-level key; v11+: it goes in ``content``.
    * v1–10: ``m.room.create`` gets ``content.creator`` = sender if absent.
    * v12: ``m.room.create`` has no ``room_id`` (pass ``room_id=None``); the room ID is
      then ``"!" + event_id[1:]`` (see :func:`room_id_for_create_event`).

    ``origin`` is not set (it is deprecated and no current PDU format requires it).
    Raises :class:`InvalidEventError` if the result breaks size limits or (v6+)
    strict canonical JSON, and ``ValueError`` for inconsistent arguments.
    """
    rv = resolve_room_version(room_version)
    is_create = type == "m.room.create"

    if rv.room_id_is_create_event_id and is_create:
        if room_id is not None:
            raise ValueError(f"room version {rv.identifier}: m.room.create must not have a room_id")
    elif room_id is None:
        raise ValueError("room_id is required for this event")

    max_depth = MAX_DEPTH_V6 if rv.strict_canonicaljson else MAX_DEPTH_V1
    depth = min(depth, max_depth)

    new_content: dict[str, Any] = dict(content)
    if is_create and not rv.implicit_room_creator:
        new_content.setdefault("creator", sender)

    pdu: dict[str, Any] = {
        "auth_events": _references(auth_event_ids, rv, prev_event_hashes),
        "content": new_content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": _references(prev_event_ids, rv, prev_event_hashes),
        "sender": sender,
        "type": type,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if rv.updated_redaction_rules:
            new_content["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if not rv.uses_event_id_hash:
        pdu["event_id"] = f"${_opaque_id()}:{server_name}"

    check_canonical_json(pdu, strict=rv.strict_canonicaljson)
    signed = sign_event(pdu, server_name, signing_key, rv)
    validate_pdu_size(signed)
    event_id = compute_event_id(signed, rv)
    return Event(signed, rv, event_id)


def room_id_for_create_event(event: Event) -> str:
    """The room ID a create event establishes.

    v12+: ``"!" + event_id[1:]``; earlier versions: the create event's own ``room_id``.
    """
    if event.type != "m.room.create":
        raise InvalidEventError(f"{event.event_id} is not an m.room.create event")
    if event.room_version.room_id_is_create_event_id:
        return room_id_from_create_event_id(event.event_id)
    return event.room_id
