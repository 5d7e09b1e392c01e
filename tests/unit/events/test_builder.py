"""build_event: the exact PDU format of each room version, hashed and signed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from signedjson.types import SigningKey, VerifyKey

from homeserver.events.builder import MAX_DEPTH_V6, build_event, room_id_for_create_event
from homeserver.events.canonical import InvalidEventError
from homeserver.events.event import Event
from homeserver.events.hashing import check_content_hash, compute_event_id
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.events.signing import verify_event_signature
from homeserver.events.validation import EventTooLargeError, is_valid_room_id, validate_pdu

ALL_VERSIONS = [str(n) for n in range(1, 13)]
SERVER = "hs.example"
ALICE = "@alice:hs.example"


ROOM_V11 = "!room:hs.example"
ROOM_V12 = "!" + "A" * 43  # the shape of a v12 room ID


def _room_for(version: RoomVersion | str) -> str:
    rv = version if isinstance(version, RoomVersion) else KNOWN_ROOM_VERSIONS[version]
    return ROOM_V12 if rv.room_id_is_create_event_id else ROOM_V11


def _build(key: SigningKey, version: RoomVersion | str, **overrides: Any) -> Event:
    kwargs: dict[str, Any] = {
        "sender": ALICE,
        "type": "m.room.message",
        "content": {"body": "hi", "msgtype": "m.text"},
        "server_name": SERVER,
        "signing_key": key,
        "origin_server_ts": 1_700_000_000_000,
        "depth": 3,
        "prev_event_ids": ["$prev"],
        "auth_event_ids": ["$auth1", "$auth2"],
        "room_id": _room_for(version),
    }
    kwargs.update(overrides)
    return build_event(version, **kwargs)


def _create(key: SigningKey, version: str) -> Event:
    room_id = None if KNOWN_ROOM_VERSIONS[version].room_id_is_create_event_id else "!r:hs.example"
    return _build(
        key,
        version,
        type="m.room.create",
        state_key="",
        content={"room_version": version},
        depth=1,
        prev_event_ids=[],
        auth_event_ids=[],
        room_id=room_id,
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_built_event_is_hashed_signed_and_valid(
    spec_key: SigningKey, spec_verify_key: VerifyKey, version: str
) -> None:
    ev = _build(spec_key, version)
    assert ev.room_version is KNOWN_ROOM_VERSIONS[version]
    assert check_content_hash(ev.pdu)
    assert verify_event_signature(ev.pdu, version, SERVER, spec_verify_key)
    assert ev.event_id == compute_event_id(ev.pdu, version)
    assert "origin" not in ev.pdu
    assert "unsigned" not in ev.pdu
    assert ev.pdu["room_id"] == _room_for(version)
    assert ev.sender == ALICE
    assert ev.depth == 3
    assert ev.origin_server_ts == 1_700_000_000_000
    assert ev.prev_event_ids == ["$prev"]
    assert ev.auth_event_ids == ["$auth1", "$auth2"]
    assert set(ev.pdu["signatures"]) == {SERVER}
    validate_pdu(ev.pdu, version)


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_format(spec_key: SigningKey, version: str) -> None:
    hashes = {"$prev": {"sha256": "prevhash"}, "$auth1": {"sha256": "a1"}}
    ev = _build(spec_key, version, prev_event_hashes=hashes)
    assert re.fullmatch(r"\$[A-Za-z0-9]+:hs\.example", ev.pdu["event_id"])
    assert ev.event_id == ev.pdu["event_id"]
    assert ev.pdu["prev_events"] == [["$prev", {"sha256": "prevhash"}]]
    assert ev.pdu["auth_events"] == [["$auth1", {"sha256": "a1"}], ["$auth2", {}]]
    # IDs are random: two otherwise identical events get different IDs.
    assert _build(spec_key, version).event_id != _build(spec_key, version).event_id


@pytest.mark.parametrize("version", ALL_VERSIONS[2:])
def test_v3_plus_format(spec_key: SigningKey, version: str) -> None:
    ev = _build(spec_key, version)
    assert "event_id" not in ev.pdu
    assert ev.pdu["prev_events"] == ["$prev"]
    assert ev.pdu["auth_events"] == ["$auth1", "$auth2"]
    alphabet = "A-Za-z0-9+/" if version == "3" else "A-Za-z0-9_-"
    assert re.fullmatch(rf"\$[{alphabet}]{{43}}", ev.event_id)
    # Deterministic: the same inputs give the same ID.
    assert _build(spec_key, version).event_id == ev.event_id


def test_exact_v12_message_keys(spec_key: SigningKey) -> None:
    ev = _build(spec_key, "12", state_key="")
    assert set(ev.pdu) == {
        "auth_events",
        "content",
        "depth",
        "hashes",
        "origin_server_ts",
        "prev_events",
        "room_id",
        "sender",
        "signatures",
        "state_key",
        "type",
    }


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_redacts_placement(spec_key: SigningKey, version: str) -> None:
    ev = _build(spec_key, version, type="m.room.redaction", content={}, redacts="$target")
    if int(version) >= 11:
        assert ev.pdu["content"] == {"redacts": "$target"}
        assert "redacts" not in ev.pdu
    else:
        assert ev.pdu["redacts"] == "$target"
        assert ev.pdu["content"] == {}
    assert ev.redacts == "$target"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_event_creator(spec_key: SigningKey, version: str) -> None:
    ev = _create(spec_key, version)
    if int(version) >= 11:
        assert "creator" not in ev.pdu["content"]
    else:
        assert ev.pdu["content"]["creator"] == ALICE
    assert ev.pdu["content"]["room_version"] == version
    assert ev.pdu["auth_events"] == [] and ev.pdu["prev_events"] == []


def test_v12_create_event_has_no_room_id(spec_key: SigningKey, spec_verify_key: VerifyKey) -> None:
    ev = _create(spec_key, "12")
    assert "room_id" not in ev.pdu
    room_id = room_id_for_create_event(ev)
    assert room_id == "!" + ev.event_id[1:]
    assert re.fullmatch(r"![A-Za-z0-9_-]{43}", room_id)
    assert is_valid_room_id(room_id, "12")
    assert verify_event_signature(ev.pdu, "12", SERVER, spec_verify_key)
    # Events in the room then carry that room ID.
    member = _build(
        spec_key,
        "12",
        type="m.room.member",
        state_key=ALICE,
        content={"membership": "join"},
        prev_event_ids=[ev.event_id],
        auth_event_ids=[],
        room_id=room_id,
        depth=2,
    )
    assert member.room_id == room_id
    validate_pdu(member.pdu, "12")


def test_v12_room_id_changes_with_create_content(spec_key: SigningKey) -> None:
    a = _create(spec_key, "12")
    b = _build(
        spec_key,
        "12",
        type="m.room.create",
        state_key="",
        content={"room_version": "12", "additional_creators": ["@bob:hs.example"]},
        depth=1,
        prev_event_ids=[],
        auth_event_ids=[],
        room_id=None,
    )
    assert room_id_for_create_event(a) != room_id_for_create_event(b)


def test_v12_create_event_rejects_room_id(spec_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        _build(
            spec_key, "12", type="m.room.create", state_key="", content={}, room_id="!x:hs.example"
        )


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_room_id_required_for_non_create(spec_key: SigningKey, version: str) -> None:
    with pytest.raises(ValueError):
        _build(spec_key, version, room_id=None)


def test_room_id_required_for_create_before_v12(spec_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        _build(spec_key, "11", type="m.room.create", state_key="", content={}, room_id=None)


def test_room_id_for_create_event_before_v12(spec_key: SigningKey) -> None:
    assert room_id_for_create_event(_create(spec_key, "11")) == "!r:hs.example"
    assert _create(spec_key, "11").room_id == "!r:hs.example"
    with pytest.raises(InvalidEventError):
        room_id_for_create_event(_build(spec_key, "11"))


def test_state_key_only_when_given(spec_key: SigningKey) -> None:
    assert "state_key" not in _build(spec_key, "12").pdu
    assert _build(spec_key, "12", state_key="").pdu["state_key"] == ""


def test_strict_canonical_json_from_v6(spec_key: SigningKey) -> None:
    with pytest.raises(InvalidEventError, match=r"content\.n"):
        _build(spec_key, "6", content={"n": 2**53})
    with pytest.raises(InvalidEventError, match=r"content\.f"):
        _build(spec_key, "12", content={"f": 1.5})
    ev = _build(spec_key, "5", content={"n": 2**53})
    assert ev.pdu["content"]["n"] == 2**53


def test_depth_is_clamped(spec_key: SigningKey) -> None:
    assert _build(spec_key, "12", depth=2**60).depth == MAX_DEPTH_V6
    assert _build(spec_key, "5", depth=2**60).depth == 2**60
    assert _build(spec_key, "5", depth=2**64).depth == 2**63 - 1


def test_oversized_event_rejected(spec_key: SigningKey) -> None:
    with pytest.raises(EventTooLargeError, match="too large"):
        _build(spec_key, "12", content={"body": "x" * 70000})
    with pytest.raises(EventTooLargeError, match="type"):
        _build(spec_key, "12", type="t" * 256)


def test_content_not_mutated(spec_key: SigningKey) -> None:
    content: dict[str, Any] = {}
    _build(spec_key, "10", type="m.room.create", state_key="", content=content)
    _build(spec_key, "11", type="m.room.redaction", content=content, redacts="$x")
    assert content == {}


def test_accepts_room_version_object(spec_key: SigningKey) -> None:
    ev = _build(spec_key, "12")
    assert _build(spec_key, KNOWN_ROOM_VERSIONS["12"]).event_id == ev.event_id
