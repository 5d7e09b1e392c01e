"""Content hashes, reference hashes and event ID formats per room version."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.events.canonical import InvalidEventError
from homeserver.events.hashing import (
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    room_id_from_create_event_id,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS

PDU: dict[str, Any] = {
    "auth_events": ["$auth"],
    "content": {"body": "hello", "msgtype": "m.text"},
    "depth": 5,
    "hashes": {"sha256": "ignored-for-the-content-hash"},
    "origin": "example.org",
    "origin_server_ts": 1700000000000,
    "prev_events": ["$prev"],
    "room_id": "!room:example.org",
    "sender": "@alice:example.org",
    "signatures": {"example.org": {"ed25519:1": "sig"}},
    "type": "m.room.message",
    "unsigned": {"age": 10},
}


def _independent_sha256(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).digest()


def test_content_hash_strips_unsigned_signatures_hashes() -> None:
    expected_input = {k: v for k, v in PDU.items() if k not in ("unsigned", "signatures", "hashes")}
    assert compute_content_hash(PDU) == _independent_sha256(expected_input)
    changed = dict(PDU, unsigned={"age": 99}, signatures={}, hashes={"sha256": "x"})
    assert compute_content_hash(changed) == compute_content_hash(PDU)
    assert compute_content_hash(dict(PDU, depth=6)) != compute_content_hash(PDU)


def test_content_hash_covers_content() -> None:
    assert compute_content_hash(dict(PDU, content={"body": "bye"})) != compute_content_hash(PDU)


def test_add_and_check_content_hash() -> None:
    hashed = add_content_hash(PDU)
    assert PDU["hashes"] == {"sha256": "ignored-for-the-content-hash"}  # not mutated
    assert hashed["hashes"]["sha256"] == base64.b64encode(
        compute_content_hash(PDU)
    ).decode().rstrip("=")
    assert "=" not in hashed["hashes"]["sha256"]
    assert check_content_hash(hashed)
    assert not check_content_hash(PDU)
    assert not check_content_hash(dict(hashed, content={"body": "tampered"}))
    assert not check_content_hash({k: v for k, v in hashed.items() if k != "hashes"})
    assert not check_content_hash(dict(hashed, hashes={"sha256": 5}))
    assert not check_content_hash(dict(hashed, hashes={"sha256": "ünicode"}))
    assert not check_content_hash(dict(hashed, hashes=[]))


def test_add_content_hash_keeps_other_algorithms() -> None:
    hashed = add_content_hash(dict(PDU, hashes={"sha512": "other"}))
    assert hashed["hashes"]["sha512"] == "other"
    assert "sha256" in hashed["hashes"]


def test_check_content_hash_accepts_padded_base64() -> None:
    padded = base64.b64encode(compute_content_hash(PDU)).decode()
    assert padded.endswith("=")
    assert check_content_hash(dict(PDU, hashes={"sha256": padded}))


def test_reference_hash_is_over_redacted_event() -> None:
    # v4: redaction drops unsigned, and content of m.room.message; signatures dropped after.
    expected = {k: v for k, v in PDU.items() if k not in ("unsigned", "signatures", "content")} | {
        "content": {}
    }
    assert compute_reference_hash(PDU, "4") == _independent_sha256(expected)
    # v11 additionally drops `origin`.
    expected_v11 = {k: v for k, v in expected.items() if k != "origin"}
    assert compute_reference_hash(PDU, "11") == _independent_sha256(expected_v11)


def test_reference_hash_ignores_redactable_and_unsigned_parts() -> None:
    rh = compute_reference_hash(PDU, "10")
    assert compute_reference_hash(dict(PDU, content={"body": "other"}), "10") == rh
    assert compute_reference_hash(dict(PDU, unsigned={}, signatures={}), "10") == rh
    assert compute_reference_hash(dict(PDU, hashes={"sha256": "other"}), "10") != rh
    assert compute_reference_hash(dict(PDU, origin="x"), "10") != rh
    assert compute_reference_hash(dict(PDU, origin="x"), "11") == compute_reference_hash(PDU, "11")


def test_reference_hash_ignores_event_id_key_for_hash_versions() -> None:
    for version in ("3", "4", "12"):
        assert compute_reference_hash(dict(PDU, event_id="$x"), version) == (
            compute_reference_hash(PDU, version)
        )
    assert compute_reference_hash(dict(PDU, event_id="$x:y"), "1") != (
        compute_reference_hash(PDU, "1")
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_event_id_v1_v2_is_server_assigned(version: str) -> None:
    assert compute_event_id(dict(PDU, event_id="$abc:example.org"), version) == ("$abc:example.org")
    with pytest.raises(InvalidEventError):
        compute_event_id(PDU, version)


def test_event_id_v3_standard_base64() -> None:
    digest = compute_reference_hash(PDU, "3")
    eid = compute_event_id(PDU, "3")
    assert eid == "$" + base64.b64encode(digest).decode().rstrip("=")
    assert len(eid) == 44


def test_event_id_v4_plus_urlsafe_base64() -> None:
    for version in [str(n) for n in range(4, 13)]:
        digest = compute_reference_hash(PDU, version)
        eid = compute_event_id(PDU, version)
        assert eid == "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
        assert re.fullmatch(r"\$[A-Za-z0-9_-]{43}", eid)


def test_v3_and_v4_differ_only_in_alphabet() -> None:
    # Find an event whose hash has a '+' or '/' in standard base64 so the forms differ.
    for n in range(200):
        pdu = dict(PDU, depth=n)
        v3 = compute_event_id(pdu, "3")
        v4 = compute_event_id(pdu, "4")
        assert v3.translate(str.maketrans("+/", "-_")) == v4
        if v3 != v4:
            assert "+" in v3 or "/" in v3
            return
    pytest.fail("no event with '+' or '/' in its v3 ID found")


def test_event_id_pinned_value() -> None:
    # A regression pin, worked out once from the algorithm (redact, canonical JSON, sha256).
    pdu = {
        "auth_events": [],
        "content": {"creator": "@a:x"},
        "depth": 1,
        "hashes": {"sha256": "h"},
        "origin_server_ts": 0,
        "prev_events": [],
        "room_id": "!r:x",
        "sender": "@a:x",
        "state_key": "",
        "type": "m.room.create",
    }
    redacted_json = (
        b'{"auth_events":[],"content":{"creator":"@a:x"},"depth":1,"hashes":{"sha256":"h"},'
        b'"origin_server_ts":0,"prev_events":[],"room_id":"!r:x","sender":"@a:x",'
        b'"state_key":"","type":"m.room.create"}'
    )
    digest = hashlib.sha256(redacted_json).digest()
    assert compute_reference_hash(pdu, "5") == digest
    assert compute_event_id(pdu, "5") == "$" + base64.urlsafe_b64encode(digest).decode()[:-1]


def test_room_id_from_create_event_id() -> None:
    assert room_id_from_create_event_id("$abc_-") == "!abc_-"
    with pytest.raises(InvalidEventError):
        room_id_from_create_event_id("!abc")


_json_keys = st.text(max_size=8)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_json_keys, children, max_size=4)
    ),
    max_leaves=12,
)


@given(content=st.dictionaries(_json_keys, _json_values, max_size=6), data=st.data())
def test_event_id_stable_under_key_reordering(content: dict[str, Any], data: Any) -> None:
    pdu = dict(PDU, type="m.room.create", state_key="", content=content)
    keys = list(pdu)
    shuffled_keys = data.draw(st.permutations(keys))
    shuffled = {k: pdu[k] for k in shuffled_keys}
    content_keys = data.draw(st.permutations(list(content)))
    shuffled["content"] = {k: content[k] for k in content_keys}
    for version in ("3", "4", "11", "12"):
        assert compute_event_id(shuffled, version) == compute_event_id(pdu, version)
    assert compute_content_hash(shuffled) == compute_content_hash(pdu)


def test_all_known_versions_produce_an_id() -> None:
    for version in KNOWN_ROOM_VERSIONS:
        assert compute_event_id(dict(PDU, event_id="$e:example.org"), version).startswith("$")
