"""Size limits, identifier grammars and structural checks for PDUs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.canonical import InvalidEventError, encode_canonical_json
from homeserver.events.redaction import resolve_room_version
from homeserver.events.room_versions import EventIdFormat, RoomVersion

__all__ = [
    "MAX_ID_BYTES",
    "MAX_PDU_BYTES",
    "EventTooLargeError",
    "is_valid_event_id",
    "is_valid_room_alias",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "validate_pdu",
    "validate_pdu_size",
]

MAX_PDU_BYTES = 65536


class EventTooLargeError(InvalidEventError):
    """The event, or one of its size-limited keys, is over its byte limit."""


MAX_ID_BYTES = 255

_PORT = r"[0-9]{1,5}"
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_DNS_RE = re.compile(r"[A-Za-z0-9.-]{1,255}")
_PORT_RE = re.compile(_PORT)
_USER_LOCALPART_RE = re.compile(r"[a-z0-9._=/+-]+")
_STD_B64_HASH_RE = re.compile(r"[A-Za-z0-9+/]{43}")
_URLSAFE_B64_HASH_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def _utf8_len(s: str) -> int | None:
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: not valid Unicode text
        return None


def _id_fits(s: str) -> bool:
    n = _utf8_len(s)
    return n is not None and n <= MAX_ID_BYTES


def _is_valid_opaque_localpart(localpart: str) -> bool:
    # Any non-surrogate code point except ':' and NUL (surrogates caught by _id_fits).
    return ":" not in localpart and "\x00" not in localpart


def is_valid_server_name(server_name: str) -> bool:
    """``hostname [":" port]`` where hostname is IPv4, ``[IPv6]`` or a DNS name."""
    if not isinstance(server_name, str) or not server_name:
        return False
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            return False
        host, rest = server_name[1:end], server_name[end + 1 :]
        if not _IPV6_CHARS_RE.fullmatch(host):
            return False
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        host, sep, port = server_name.partition(":")
        rest = sep + port
        m = _IPV4_RE.fullmatch(host)
        if m:
            if any(int(part) > 255 for part in m.groups()):
                return False
        elif not _DNS_RE.fullmatch(host):
            return False
    if rest:
        if not rest.startswith(":") or not _PORT_RE.fullmatch(rest[1:]):
            return False
    return True


def _split_sigil_id(identifier: str, sigil: str) -> tuple[str, str] | None:
    if not isinstance(identifier, str) or not identifier.startswith(sigil):
        return None
    localpart, sep, domain = identifier[1:].partition(":")
    if not sep:
        return None
    return localpart, domain


def is_valid_user_id(user_id: str, *, allow_historical: bool = False) -> bool:
    """``@localpart:server_name``, at most 255 bytes.

    By default the localpart must use the current grammar (``a-z 0-9 . _ = - / +``,
    non-empty). ``allow_historical`` accepts what events from other servers may carry:
    any non-surrogate code points except ``:`` and NUL, including an empty localpart.
    """
    parts = _split_sigil_id(user_id, "@")
    if parts is None or not _id_fits(user_id):
        return False
    localpart, domain = parts
    if allow_historical:
        ok = _is_valid_opaque_localpart(localpart)
    else:
        ok = _USER_LOCALPART_RE.fullmatch(localpart) is not None
    return ok and is_valid_server_name(domain)


def is_valid_room_alias(alias: str) -> bool:
    """``#localpart:server_name``, at most 255 bytes; localpart excludes ``:`` and NUL."""
    parts = _split_sigil_id(alias, "#")
    if parts is None or not _id_fits(alias):
        return False
    localpart, domain = parts
    return _is_valid_opaque_localpart(localpart) and is_valid_server_name(domain)


def _is_sha256_b64(s: str, *, urlsafe: bool) -> bool:
    pattern = _URLSAFE_B64_HASH_RE if urlsafe else _STD_B64_HASH_RE
    if not pattern.fullmatch(s):
        return False
    # Only the canonical encoding of 32 bytes (trailing bits zero) is accepted.
    raw = decode_base64(s)
    return len(raw) == 32 and encode_base64(raw, urlsafe=urlsafe) == s


def is_valid_room_id(room_id: str, room_version: RoomVersion | str) -> bool:
    """Room ID grammar for the given room version.

    v1–11: ``!opaque:server_name`` (at most 255 bytes). v12+: ``!`` followed by the
    URL-safe unpadded base64 sha256 of the create event (its event ID with ``!``).
    """
    rv = resolve_room_version(room_version)
    if not isinstance(room_id, str) or not room_id.startswith("!") or not _id_fits(room_id):
        return False
    if rv.room_id_is_create_event_id:
        return _is_sha256_b64(room_id[1:], urlsafe=True)
    parts = _split_sigil_id(room_id, "!")
    if parts is None:
        return False
    localpart, domain = parts
    return _is_valid_opaque_localpart(localpart) and is_valid_server_name(domain)


def is_valid_event_id(event_id: str, room_version: RoomVersion | str | None = None) -> bool:
    """Event ID grammar, at most 255 bytes.

    Without a room version: ``$`` followed by at least one character, no NUL. With one:
    v1–2 ``$opaque:server_name``; v3 ``$`` + standard unpadded base64 sha256; v4+ ``$``
    + URL-safe unpadded base64 sha256.
    """
    if not isinstance(event_id, str) or not event_id.startswith("$") or len(event_id) < 2:
        return False
    if not _id_fits(event_id) or "\x00" in event_id:
        return False
    if room_version is None:
        return True
    rv = resolve_room_version(room_version)
    if rv.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        parts = _split_sigil_id(event_id, "$")
        if parts is None:
            return False
        localpart, domain = parts
        return _is_valid_opaque_localpart(localpart) and is_valid_server_name(domain)
    return _is_sha256_b64(
        event_id[1:], urlsafe=rv.event_id_format is EventIdFormat.REFERENCE_HASH_URLSAFE
    )


_SIZED_KEYS = ("sender", "room_id", "state_key", "type", "event_id")


def validate_pdu_size(pdu: Mapping[str, Any]) -> None:
    """Enforce the event size limits.

    The whole PDU (with signatures, as canonical JSON) must be at most 65,536 bytes;
    ``sender``, ``room_id``, ``state_key``, ``type`` and ``event_id`` at most 255 bytes.
    Raises :class:`EventTooLargeError` (an :class:`InvalidEventError`) with the reason,
    or :class:`InvalidEventError` if one of those keys is not a string.
    """
    for key in _SIZED_KEYS:
        if key not in pdu:
            continue
        value = pdu[key]
        if not isinstance(value, str):
            raise InvalidEventError(f"{key} must be a string")
        n = _utf8_len(value)
        if n is None:
            raise InvalidEventError(f"{key} is not valid Unicode")
        if n > MAX_ID_BYTES:
            raise EventTooLargeError(f"{key} too large: {n} bytes, more than {MAX_ID_BYTES}")
    size = len(encode_canonical_json(pdu, strict=False))
    if size > MAX_PDU_BYTES:
        raise EventTooLargeError(f"event too large: {size} bytes, more than {MAX_PDU_BYTES}")


def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise InvalidEventError(reason)


def _check_references(pdu: Mapping[str, Any], key: str, rv: RoomVersion) -> None:
    refs = pdu.get(key)
    _require(isinstance(refs, list), f"{key} must be a list")
    assert isinstance(refs, list)
    for ref in refs:
        if rv.uses_event_id_hash:
            _require(isinstance(ref, str), f"{key} entries must be event IDs")
        else:
            _require(
                isinstance(ref, list)
                and len(ref) == 2
                and isinstance(ref[0], str)
                and isinstance(ref[1], Mapping),
                f"{key} entries must be [event_id, hashes] pairs",
            )


def validate_pdu(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> None:
    """Structural checks on a received PDU for its room version.

    Checks sizes, canonical JSON (strict from v6), required keys and their JSON
    types, the shape of ``prev_events``/``auth_events``, the v1–2 ``event_id`` and
    the ``room_id`` grammar. Does not check hashes,
    signatures or auth rules (so a v12 create event carrying a ``room_id`` passes
    here and is rejected by the auth rules). Raises :class:`InvalidEventError`.
    """
    rv = resolve_room_version(room_version)
    _require(isinstance(pdu, Mapping), "event must be a JSON object")
    validate_pdu_size(pdu)
    encode_canonical_json(pdu, strict=rv.strict_canonicaljson)

    for key, typ in (
        ("type", str),
        ("sender", str),
        ("content", Mapping),
        ("hashes", Mapping),
        ("signatures", Mapping),
    ):
        _require(isinstance(pdu.get(key), typ), f"{key} is missing or not a {typ.__name__}")
    for key in ("depth", "origin_server_ts"):
        value = pdu.get(key)
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            f"{key} is missing or not an integer",
        )
    _require(pdu["depth"] >= 0, "depth must not be negative")
    _require(
        "state_key" not in pdu or isinstance(pdu["state_key"], str), "state_key must be a string"
    )
    _check_references(pdu, "prev_events", rv)
    _check_references(pdu, "auth_events", rv)

    # v3+: an event_id key is not part of the format and is ignored when hashing.
    if not rv.uses_event_id_hash:
        _require(
            isinstance(pdu.get("event_id"), str) and is_valid_event_id(pdu["event_id"], rv),
            "event_id is missing or malformed",
        )

    _require(is_valid_user_id(pdu["sender"], allow_historical=True), "sender is not a user ID")

    # A v12 create event must have no room_id; that is an auth rule (rejection), not a
    # format error, so it is left to the auth checks.
    if not (rv.room_id_is_create_event_id and pdu["type"] == "m.room.create"):
        room_id = pdu.get("room_id")
        _require(
            isinstance(room_id, str) and is_valid_room_id(room_id, rv),
            "room_id is missing or malformed",
        )
