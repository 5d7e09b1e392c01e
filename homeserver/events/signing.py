"""Signing and verifying JSON objects and events with ed25519 server keys.

Keys are signedjson/PyNaCl keys carrying ``alg`` and ``version`` attributes (as made
by ``signedjson.key.decode_signing_key_base64`` / ``get_verify_key``); the key ID is
``"<alg>:<version>"``, e.g. ``"ed25519:1"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nacl.exceptions
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.canonical import InvalidEventError, encode_canonical_json
from homeserver.events.event import Event
from homeserver.events.hashing import add_content_hash
from homeserver.events.redaction import redact_pdu, resolve_room_version
from homeserver.events.room_versions import RoomVersion

__all__ = [
    "build_server_keys_response",
    "key_id",
    "servers_required_to_sign",
    "sign_event",
    "sign_json",
    "signing_bytes",
    "verify_event_signature",
    "verify_json",
]

_SUPPORTED_ALGORITHMS = frozenset({"ed25519"})


def key_id(key: SigningKey | VerifyKey) -> str:
    """The signing key identifier, ``"<alg>:<version>"``."""
    return f"{key.alg}:{key.version}"


def signing_bytes(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON without ``signatures``/``unsigned``."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return encode_canonical_json(stripped, strict=False)


def sign_json(obj: Mapping[str, Any], signing_key: SigningKey, signing_name: str) -> dict[str, Any]:
    """Return a copy of ``obj`` with this key's signature added under ``signing_name``.

    Existing signatures (from this or other entities) are kept; ``unsigned`` is carried
    over unchanged and is not covered by the signature.
    """
    signature = signing_key.sign(signing_bytes(obj)).signature
    out = dict(obj)
    out["signatures"] = _merge_signatures(
        obj.get("signatures"), {signing_name: {key_id(signing_key): encode_base64(signature)}}
    )
    return out


def verify_json(
    obj: Mapping[str, Any],
    signing_name: str,
    verify_key: VerifyKey,
    *,
    key_id_override: str | None = None,
) -> bool:
    """True if ``obj`` carries a valid signature by ``signing_name`` with ``verify_key``.

    The signature is looked up under the key's own ID (``"<alg>:<version>"``) unless
    ``key_id_override`` names another. Any failure (missing entry, unsupported
    algorithm, bad base64, bad signature, unencodable JSON) gives False.
    """
    kid = key_id_override if key_id_override is not None else key_id(verify_key)
    if kid.split(":", 1)[0] not in _SUPPORTED_ALGORITHMS:
        return False
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    entity_sigs = signatures.get(signing_name)
    if not isinstance(entity_sigs, Mapping):
        return False
    sig_b64 = entity_sigs.get(kid)
    if not isinstance(sig_b64, str):
        return False
    try:
        sig = decode_base64(sig_b64)
    except Exception:  # malformed base64 or non-ASCII input
        return False
    try:
        message = signing_bytes(obj)
    except InvalidEventError:
        return False
    try:
        verify_key.verify(message, sig)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def _merge_signatures(existing: Any, new: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if isinstance(existing, Mapping):
        for name, sigs in existing.items():
            merged[name] = dict(sigs) if isinstance(sigs, Mapping) else sigs
    for name, sigs in new.items():
        current = merged.get(name)
        entry = dict(current) if isinstance(current, Mapping) else {}
        entry.update(sigs)
        merged[name] = entry
    return merged


def sign_event(
    pdu: Mapping[str, Any] | Event,
    server_name: str,
    signing_key: SigningKey,
    room_version: RoomVersion | str | None = None,
    *,
    add_hash: bool = True,
) -> dict[str, Any]:
    """Hash (unless ``add_hash`` is False) and sign a PDU; return the signed copy.

    The content hash is set in ``hashes.sha256``; then the *redacted* form, per
    ``room_version``, is signed and the signature merged into ``signatures``. Use
    ``add_hash=False`` to counter-sign someone else's event without touching its hash.
    ``room_version`` may be omitted only when ``pdu`` is an :class:`Event`.
    """
    if isinstance(pdu, Event):
        rv = pdu.room_version if room_version is None else resolve_room_version(room_version)
        body: Mapping[str, Any] = pdu.pdu
    else:
        if room_version is None:
            raise TypeError("sign_event needs room_version when given a plain PDU mapping")
        rv = resolve_room_version(room_version)
        body = pdu
    hashed = add_content_hash(body) if add_hash else dict(body)
    redacted = redact_pdu(hashed, rv)
    signed_redacted = sign_json(redacted, signing_key, server_name)
    hashed["signatures"] = signed_redacted["signatures"]
    return hashed


def verify_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion | str,
    server_name: str,
    verify_key: VerifyKey,
) -> bool:
    """True if ``server_name`` validly signed the redacted form of ``pdu`` with the key.

    Works for a full event as well as an already-redacted copy. It does not check the
    content hash, nor key validity periods; see ``check_content_hash``.
    """
    rv = resolve_room_version(room_version)
    return verify_json(redact_pdu(pdu, rv), server_name, verify_key)


def _server_of(identifier: Any) -> str | None:
    if isinstance(identifier, str) and ":" in identifier:
        return identifier.split(":", 1)[1]
    return None


def servers_required_to_sign(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> set[str]:
    """Servers whose signature an event needs: the sender's, plus (v1–2) the event ID's.

    The third-party-invite exception (where the sending server may differ) is left to
    the caller.
    """
    rv = resolve_room_version(room_version)
    servers: set[str] = set()
    sender_server = _server_of(pdu.get("sender"))
    if sender_server:
        servers.add(sender_server)
    if not rv.uses_event_id_hash:
        event_server = _server_of(pdu.get("event_id"))
        if event_server:
            servers.add(event_server)
    return servers


def build_server_keys_response(
    server_name: str,
    signing_key: SigningKey,
    valid_until_ts: int,
    *,
    old_verify_keys: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The signed body of ``GET /_matrix/key/v2/server``.

    ``old_verify_keys`` maps key IDs to ``{"key": <unpadded base64>, "expired_ts": <ms>}``.
    """
    verify_key_bytes = bytes(signing_key.verify_key)
    body: dict[str, Any] = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {key_id(signing_key): {"key": encode_base64(verify_key_bytes)}},
        "old_verify_keys": {k: dict(v) for k, v in (old_verify_keys or {}).items()},
    }
    return sign_json(body, signing_key, server_name)
