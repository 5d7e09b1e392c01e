"""Content hashes, reference hashes and hash-derived event IDs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.canonical import InvalidEventError, encode_canonical_json
from homeserver.events.redaction import redact_pdu, resolve_room_version
from homeserver.events.room_versions import EventIdFormat, RoomVersion

__all__ = [
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "room_id_from_create_event_id",
]


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 over the canonical JSON of the full event minus unsigned/signatures/hashes."""
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    # Hashing never validates number ranges: v1–5 events may legitimately hold values
    # outside the strict range, and strictness is checked where events are accepted.
    return hashlib.sha256(encode_canonical_json(stripped, strict=False)).digest()


def add_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``pdu`` with ``hashes.sha256`` set to its content hash."""
    out = dict(pdu)
    hashes = out.get("hashes")
    new_hashes = dict(hashes) if isinstance(hashes, Mapping) else {}
    new_hashes["sha256"] = encode_base64(compute_content_hash(pdu))
    out["hashes"] = new_hashes
    return out


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` is present and matches the event's content hash."""
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = decode_base64(claimed)
    except Exception:  # binascii.Error / ValueError on malformed base64
        return False
    try:
        actual = compute_content_hash(pdu)
    except InvalidEventError:
        return False
    return claimed_bytes == actual


def compute_reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> bytes:
    """SHA-256 over the canonical JSON of the redacted event minus signatures/unsigned.

    For room versions whose event IDs derive from this hash (3+), a stray top-level
    ``event_id`` key is ignored: the ID cannot be an input to its own hash.
    """
    rv = resolve_room_version(room_version)
    redacted = redact_pdu(pdu, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    if rv.uses_event_id_hash:
        redacted.pop("event_id", None)
    return hashlib.sha256(encode_canonical_json(redacted, strict=False)).digest()


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> str:
    """The event ID: the pdu's own ``event_id`` (v1–2) or one derived from the reference hash.

    v3 uses standard unpadded base64, v4+ URL-safe unpadded base64, both prefixed with ``$``.
    """
    rv = resolve_room_version(room_version)
    if rv.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEventError(f"room version {rv.identifier} event has no event_id")
        return event_id
    digest = compute_reference_hash(pdu, rv)
    encoded = encode_base64(
        digest, urlsafe=rv.event_id_format is EventIdFormat.REFERENCE_HASH_URLSAFE
    )
    return "$" + encoded


def room_id_from_create_event_id(create_event_id: str) -> str:
    """Room version 12+: the room ID is the create event's ID with ``!`` for ``$``."""
    if not create_event_id.startswith("$"):
        raise InvalidEventError(f"not an event ID: {create_event_id!r}")
    return "!" + create_event_id[1:]
