"""Size limits, identifier grammars and PDU structure checks."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events.canonical import InvalidEventError
from homeserver.events.validation import (
    MAX_PDU_BYTES,
    EventTooLargeError,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    validate_pdu,
    validate_pdu_size,
)

# --- server names --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "matrix.org",
        "matrix.org:8888",
        "1.2.3.4",
        "1.2.3.4:1234",
        "[1234:5678::abcd]",
        "[1234:5678::abcd]:5678",
        "localhost",
        "a-b.example",
        "MATRIX.ORG",
        "[::1]",
        "[::ffff:1.2.3.4]",
        "x" * 255,
    ],
)
def test_valid_server_names(name: str) -> None:
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "matrix.org:",
        "matrix.org:123456",
        "matrix.org:80a",
        "matrix org",
        "matrix_org",
        "mätrix.org",
        "256.1.1.1",
        "[1234:5678::abcd",
        "[not-hex]",
        "[1:2:3:4:5:6:7:8:9]",
        "[::1]x",
        "[::1]:",
        "1234:5678::abcd",
        "x" * 256,
        "a.b:1:2",
    ],
)
def test_invalid_server_names(name: str) -> None:
    assert not is_valid_server_name(name)


# --- user IDs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id", ["@alice:example.org", "@a.b_c=d-e/f+g:example.org:8448", "@0:[::1]"]
)
def test_valid_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert is_valid_user_id(user_id, allow_historical=True)


@pytest.mark.parametrize("user_id", ["@Alice:example.org", "@al ice:example.org", "@é:x", "@:x"])
def test_historical_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)
    assert is_valid_user_id(user_id, allow_historical=True)


@pytest.mark.parametrize(
    "user_id",
    ["alice:example.org", "@alice", "@alice:", "@alice:bad_server", "@a\x00b:x", "#a:x"],
)
def test_invalid_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)
    assert not is_valid_user_id(user_id, allow_historical=True)


def test_user_id_length_limit_in_bytes() -> None:
    ok = "@" + "a" * (255 - len("@:x")) + ":x"
    assert len(ok) == 255 and is_valid_user_id(ok)
    assert not is_valid_user_id("@a" + ok[1:])
    # Bytes, not characters: 'é' is two UTF-8 bytes.
    hist = "@" + "é" * 126 + ":x"  # 1 + 252 + 2 = 255 bytes
    assert is_valid_user_id(hist, allow_historical=True)
    assert not is_valid_user_id("@é" + hist[1:], allow_historical=True)


# --- room IDs ------------------------------------------------------------------------

V12_ROOM_ID = "!" + "Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"


@pytest.mark.parametrize("version", [str(n) for n in range(1, 12)])
def test_room_ids_before_v12(version: str) -> None:
    assert is_valid_room_id("!abc:example.org", version)
    assert is_valid_room_id("!UcYsUzyxTGDxLBEvLy:example.org:8448", version)
    assert not is_valid_room_id("!abc", version)
    assert not is_valid_room_id("abc:example.org", version)
    assert not is_valid_room_id("!abc:bad server", version)
    assert not is_valid_room_id("!a\x00c:example.org", version)
    assert not is_valid_room_id(V12_ROOM_ID, version)
    assert not is_valid_room_id("!" + "a" * 253 + ":x", version)  # 256 bytes
    assert is_valid_room_id("!" + "a" * 252 + ":x", version)


def test_room_ids_v12() -> None:
    assert is_valid_room_id(V12_ROOM_ID, "12")
    assert not is_valid_room_id("!abc:example.org", "12")
    assert not is_valid_room_id("$" + V12_ROOM_ID[1:], "12")
    assert not is_valid_room_id(V12_ROOM_ID + "A", "12")
    assert not is_valid_room_id(V12_ROOM_ID[:-1], "12")
    assert not is_valid_room_id(V12_ROOM_ID.replace("-", "+"), "12")  # standard alphabet
    # The last character of 32 bytes in base64 carries 2 padding bits, which must be 0.
    assert not is_valid_room_id(V12_ROOM_ID[:-1] + "Z", "12")


def test_room_id_unknown_version() -> None:
    with pytest.raises(ValueError):
        is_valid_room_id("!a:b", "99")


# --- event IDs -----------------------------------------------------------------------

V3_ID = "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk"
V4_ID = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"


def test_event_ids_any_version() -> None:
    for eid in ("$a4ecee13e2accdadf56c1025:example.com", V3_ID, V4_ID, "$x"):
        assert is_valid_event_id(eid)
    for bad in ("", "$", "a4ecee:example.com", "$a\x00", "$" + "a" * 255):
        assert not is_valid_event_id(bad)


@pytest.mark.parametrize("version", ["1", "2"])
def test_event_ids_v1_v2(version: str) -> None:
    assert is_valid_event_id("$a4ecee13e2accdadf56c1025:example.com", version)
    assert not is_valid_event_id(V4_ID, version)
    assert not is_valid_event_id("$abc:bad server", version)


def test_event_ids_v3() -> None:
    assert is_valid_event_id(V3_ID, "3")
    assert not is_valid_event_id(V4_ID, "3")
    assert not is_valid_event_id("$abc:example.com", "3")


@pytest.mark.parametrize("version", [str(n) for n in range(4, 13)])
def test_event_ids_v4_plus(version: str) -> None:
    assert is_valid_event_id(V4_ID, version)
    assert not is_valid_event_id(V3_ID, version)
    assert not is_valid_event_id("!" + V4_ID[1:], version)


# --- room aliases --------------------------------------------------------------------


def test_room_aliases() -> None:
    assert is_valid_room_alias("#room:example.org")
    assert is_valid_room_alias("#Ünïcode room:example.org")
    assert is_valid_room_alias("#:example.org")
    assert not is_valid_room_alias("room:example.org")
    assert not is_valid_room_alias("#room")
    assert not is_valid_room_alias("#ro\x00om:example.org")
    assert not is_valid_room_alias("#room:bad_server")
    assert not is_valid_room_alias("#" + "a" * 253 + ":x")
    assert is_valid_room_alias("#" + "a" * 252 + ":x")


# --- size limits ---------------------------------------------------------------------


def _pdu(**overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "auth_events": [],
        "content": {"body": "x"},
        "depth": 1,
        "hashes": {"sha256": "h"},
        "origin_server_ts": 1,
        "prev_events": [],
        "room_id": "!r:x",
        "sender": "@s:x",
        "signatures": {},
        "type": "m.room.message",
    }
    pdu.update(overrides)
    return pdu


def _pad_to(pdu: dict[str, Any], total: int) -> dict[str, Any]:
    from homeserver.events.canonical import encode_canonical_json

    base = len(encode_canonical_json(dict(pdu, content={"body": ""})))
    return dict(pdu, content={"body": "x" * (total - base)})


def test_total_size_limit_is_inclusive() -> None:
    from homeserver.events.canonical import encode_canonical_json

    exact = _pad_to(_pdu(), MAX_PDU_BYTES)
    assert len(encode_canonical_json(exact)) == MAX_PDU_BYTES
    validate_pdu_size(exact)
    over = _pad_to(_pdu(), MAX_PDU_BYTES + 1)
    with pytest.raises(EventTooLargeError, match="too large: 65537 bytes"):
        validate_pdu_size(over)


def test_size_counts_signatures() -> None:
    pdu = _pad_to(_pdu(), MAX_PDU_BYTES - 10)
    validate_pdu_size(pdu)
    with pytest.raises(InvalidEventError):
        validate_pdu_size(dict(pdu, signatures={"x": {"ed25519:1": "s" * 64}}))


@pytest.mark.parametrize("key", ["sender", "room_id", "state_key", "type", "event_id"])
def test_key_limits(key: str) -> None:
    validate_pdu_size(_pdu(**{key: "a" * 255}))
    with pytest.raises(EventTooLargeError, match=key):
        validate_pdu_size(_pdu(**{key: "a" * 256}))
    with pytest.raises(EventTooLargeError, match=key):
        validate_pdu_size(_pdu(**{key: "é" * 128}))  # 256 bytes, 128 characters
    with pytest.raises(InvalidEventError, match=key) as excinfo:
        validate_pdu_size(_pdu(**{key: 5}))
    assert not isinstance(excinfo.value, EventTooLargeError)


# --- validate_pdu --------------------------------------------------------------------


def test_validate_pdu_accepts_good_events() -> None:
    validate_pdu(_pdu(), "11")
    validate_pdu(_pdu(room_id=V12_ROOM_ID), "12")
    validate_pdu(
        _pdu(event_id="$e:x", prev_events=[["$p:x", {"sha256": "h"}]], auth_events=[]), "1"
    )
    # A v12 create event with no room_id is well-formed.
    create = {k: v for k, v in _pdu(type="m.room.create", state_key="").items() if k != "room_id"}
    validate_pdu(create, "12")


@pytest.mark.parametrize(
    ("version", "pdu", "reason"),
    [
        ("11", _pdu(depth="1"), "depth"),
        ("11", _pdu(depth=-1), "depth"),
        ("11", _pdu(depth=True), "depth"),
        ("11", _pdu(origin_server_ts=1.0), "float"),
        ("11", _pdu(content=[]), "content"),
        ("11", _pdu(sender="alice"), "sender"),
        ("11", _pdu(room_id="r"), "room_id"),
        ("12", _pdu(), "room_id"),
        ("11", _pdu(prev_events=[["$p", {}]]), "prev_events"),
        ("11", _pdu(auth_events="$a"), "auth_events"),
        ("11", _pdu(state_key=1), "state_key"),
        ("11", _pdu(content={"n": 2**53}), "integer"),
        ("1", _pdu(), "event_id"),
        ("1", _pdu(event_id="$e:x", prev_events=["$p:x"]), "prev_events"),
        ("11", {k: v for k, v in _pdu().items() if k != "hashes"}, "hashes"),
    ],
)
def test_validate_pdu_rejects(version: str, pdu: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEventError, match=reason):
        validate_pdu(pdu, version)


def test_validate_pdu_lenient_before_v6() -> None:
    validate_pdu(_pdu(content={"n": 2**60}), "5")
