"""Signing JSON and events, checked against the spec appendix test vectors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import encode_base64

from homeserver.events.event import Event
from homeserver.events.hashing import check_content_hash
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.signing import (
    build_server_keys_response,
    servers_required_to_sign,
    sign_event,
    sign_json,
    verify_event_signature,
    verify_json,
)

# --- Appendix "JSON Signing" vectors -------------------------------------------------


def test_sign_empty_object_vector(spec_key: SigningKey) -> None:
    assert sign_json({}, spec_key, "domain") == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/"
                "7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_sign_data_object_vector(spec_key: SigningKey) -> None:
    assert sign_json({"one": 1, "two": "Two"}, spec_key, "domain") == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZ"
                "hG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


def test_sign_json_does_not_mutate_and_keeps_unsigned(spec_key: SigningKey) -> None:
    obj: dict[str, Any] = {"one": 1, "two": "Two", "unsigned": {"age_ts": 5}}
    before = copy.deepcopy(obj)
    signed = sign_json(obj, spec_key, "domain")
    assert obj == before
    assert signed["unsigned"] == {"age_ts": 5}
    # unsigned is not covered: same signature as the data-object vector
    assert signed["signatures"]["domain"]["ed25519:1"].startswith("KqmLSbO39")


def test_sign_json_merges_existing_signatures(spec_key: SigningKey) -> None:
    obj = {"signatures": {"other.example": {"ed25519:x": "abc"}}}
    signed = sign_json(obj, spec_key, "domain")
    assert signed["signatures"]["other.example"] == {"ed25519:x": "abc"}
    # existing signatures are not covered either: same as the empty-object vector
    assert signed["signatures"]["domain"]["ed25519:1"].startswith("K8280/U9")


# --- Appendix "Event Signing" vectors ------------------------------------------------

MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}

MINIMAL_EVENT_SIGNED: dict[str, Any] = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLj"
            "AWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}

MESSAGE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}

MESSAGE_EVENT_SIGNED: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eY"
            "HYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}

# The vectors predate room version 11 (they keep `origin`), so they hold for v1–10.
PRE_V11 = [str(n) for n in range(1, 11)]


@pytest.mark.parametrize("version", PRE_V11)
@pytest.mark.parametrize(
    ("unsigned_event", "signed_event"),
    [(MINIMAL_EVENT, MINIMAL_EVENT_SIGNED), (MESSAGE_EVENT, MESSAGE_EVENT_SIGNED)],
    ids=["minimal", "message"],
)
def test_event_signing_vectors(
    spec_key: SigningKey,
    spec_verify_key: VerifyKey,
    version: str,
    unsigned_event: dict[str, Any],
    signed_event: dict[str, Any],
) -> None:
    before = copy.deepcopy(unsigned_event)
    signed = sign_event(unsigned_event, "domain", spec_key, version)
    assert signed == signed_event
    assert unsigned_event == before  # input not mutated
    assert check_content_hash(signed)
    assert verify_event_signature(signed, version, "domain", spec_verify_key)


def test_v11_signature_differs_because_origin_is_not_protected(
    spec_key: SigningKey, spec_verify_key: VerifyKey
) -> None:
    signed = sign_event(MINIMAL_EVENT, "domain", spec_key, "11")
    assert signed["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]  # content hash is version-free
    assert signed["signatures"] != MINIMAL_EVENT_SIGNED["signatures"]
    assert verify_event_signature(signed, "11", "domain", spec_verify_key)
    # v11 does not sign `origin`, so changing it keeps the signature valid...
    assert verify_event_signature(dict(signed, origin="elsewhere"), "11", "domain", spec_verify_key)
    # ...whereas v10 signed it.
    assert not verify_event_signature(
        dict(MINIMAL_EVENT_SIGNED, origin="elsewhere"), "10", "domain", spec_verify_key
    )


def test_sign_event_accepts_event_object(spec_key: SigningKey) -> None:
    ev = Event(MESSAGE_EVENT, KNOWN_ROOM_VERSIONS["1"], "$0:domain")
    assert sign_event(ev, "domain", spec_key) == MESSAGE_EVENT_SIGNED


def test_sign_event_requires_room_version_for_mapping(spec_key: SigningKey) -> None:
    with pytest.raises(TypeError):
        sign_event(MESSAGE_EVENT, "domain", spec_key)


def test_counter_signing_keeps_hash_and_existing_signature(spec_key: SigningKey) -> None:
    other = generate_signing_key("k2")
    countersigned = sign_event(MESSAGE_EVENT_SIGNED, "other.example", other, "1", add_hash=False)
    assert countersigned["hashes"] == MESSAGE_EVENT_SIGNED["hashes"]
    assert countersigned["signatures"]["domain"] == MESSAGE_EVENT_SIGNED["signatures"]["domain"]
    assert verify_event_signature(countersigned, "1", "other.example", get_verify_key(other))
    assert verify_event_signature(countersigned, "1", "domain", get_verify_key(spec_key))


# --- Verification failures -----------------------------------------------------------


def test_verify_event_signature_survives_redaction(spec_verify_key: VerifyKey) -> None:
    redacted = dict(MESSAGE_EVENT_SIGNED, content={})
    assert verify_event_signature(redacted, "1", "domain", spec_verify_key)
    assert not check_content_hash(redacted)  # but the content hash no longer matches


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: e.__setitem__("sender", "@v:domain"),
        lambda e: e.__setitem__("hashes", {"sha256": "AAAA"}),
        lambda e: e.__setitem__("origin_server_ts", 1000001),
        lambda e: e["signatures"]["domain"].__setitem__("ed25519:1", "not base64 !!"),
        lambda e: e["signatures"]["domain"].__setitem__("ed25519:1", encode_base64(b"\x00" * 64)),
        lambda e: e["signatures"].pop("domain"),
        lambda e: e.__setitem__("signatures", []),
    ],
    ids=["sender", "hashes", "ts", "bad-b64", "zero-sig", "missing", "not-object"],
)
def test_verify_event_signature_detects_tampering(spec_verify_key: VerifyKey, tamper: Any) -> None:
    ev = copy.deepcopy(MESSAGE_EVENT_SIGNED)
    assert verify_event_signature(ev, "1", "domain", spec_verify_key)
    tamper(ev)
    assert not verify_event_signature(ev, "1", "domain", spec_verify_key)


def test_verify_rejects_wrong_server_and_wrong_key(spec_verify_key: VerifyKey) -> None:
    assert not verify_event_signature(MESSAGE_EVENT_SIGNED, "1", "other", spec_verify_key)
    other_vk = get_verify_key(generate_signing_key("1"))
    assert not verify_event_signature(MESSAGE_EVENT_SIGNED, "1", "domain", other_vk)


def test_verify_json_unsupported_algorithm(spec_key: SigningKey) -> None:
    signed = sign_json({"a": 1}, spec_key, "domain")
    vk = get_verify_key(spec_key)
    assert verify_json(signed, "domain", vk)
    assert verify_json(signed, "domain", vk, key_id_override="ed25519:1")
    assert not verify_json(signed, "domain", vk, key_id_override="ed25519:2")
    sigs = signed["signatures"]["domain"]
    weird = dict(signed, signatures={"domain": {"curve25519:1": sigs["ed25519:1"]}})
    assert not verify_json(weird, "domain", vk, key_id_override="curve25519:1")


def test_servers_required_to_sign() -> None:
    pdu = {"sender": "@u:a.example", "event_id": "$x:b.example"}
    assert servers_required_to_sign(pdu, "1") == {"a.example", "b.example"}
    assert servers_required_to_sign(pdu, "2") == {"a.example", "b.example"}
    assert servers_required_to_sign(pdu, "3") == {"a.example"}


# --- /_matrix/key/v2/server ----------------------------------------------------------


def test_server_keys_response(spec_key: SigningKey, spec_verify_key: VerifyKey) -> None:
    body = build_server_keys_response("domain", spec_key, 1652262000000)
    assert body["server_name"] == "domain"
    assert body["valid_until_ts"] == 1652262000000
    assert body["old_verify_keys"] == {}
    assert body["verify_keys"] == {"ed25519:1": {"key": encode_base64(bytes(spec_key.verify_key))}}
    assert set(body["signatures"]) == {"domain"}
    assert verify_json(body, "domain", spec_verify_key)
    assert not verify_json(dict(body, valid_until_ts=1652262000001), "domain", spec_verify_key)


def test_server_keys_response_old_keys(spec_key: SigningKey) -> None:
    old = {"ed25519:0ld": {"key": "abc", "expired_ts": 1532645052628}}
    body = build_server_keys_response("domain", spec_key, 1, old_verify_keys=old)
    assert body["old_verify_keys"] == old
    assert verify_json(body, "domain", get_verify_key(spec_key))
