"""Devices, end-to-end encryption keys and the E2EE /sync fields, over HTTP against a real
single Ganglion process (SQLite).

Device keys are signed here with real ed25519 keys (signedjson), as a client signs them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.single import PASSWORD, SingleServer, single_server
from tests.harness.waiting import wait_until

ALG = "signed_curve25519"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("keys")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_internal_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def err(result: tuple[int, Any], status: int, errcode: str) -> dict[str, Any]:
    assert result[0] == status, result
    assert result[1]["errcode"] == errcode, result
    return dict(result[1])


class Device:
    """A client device with its own ed25519 signing key."""

    def __init__(self, client: MatrixClient) -> None:
        assert client.user_id is not None and client.device_id is not None
        self.client = client
        self.user_id: str = client.user_id
        self.device_id: str = client.device_id
        self.signing_key = generate_signing_key(self.device_id)
        self.public_key = encode_verify_key_base64(get_verify_key(self.signing_key))
        self._next = 0

    def device_keys(self) -> dict[str, Any]:
        keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": "Y3VydmUyNTUxOWtleW9mdGhpc2RldmljZWFhYWE",
                f"ed25519:{self.device_id}": self.public_key,
            },
        }
        return sign_json(keys, self.user_id, self.signing_key)

    def otks(self, count: int) -> dict[str, Any]:
        out = {}
        for _ in range(count):
            self._next += 1
            key = {"key": f"otk{self._next:04d}"}
            out[f"{ALG}:K{self._next:04d}"] = sign_json(key, self.user_id, self.signing_key)
        return out

    def upload(self, **body: Any) -> tuple[int, Any]:
        return self.client.call("POST", "keys/upload", body)


def new_device(server: SingleServer, prefix: str = "user") -> Device:
    return Device(server.new_user(prefix))


def query(client: MatrixClient, *user_ids: str) -> dict[str, Any]:
    return dict(ok(client.call("POST", "keys/query", {"device_keys": {u: [] for u in user_ids}})))


def claim(client: MatrixClient, device: Device, algorithm: str = ALG) -> dict[str, Any]:
    body = {"one_time_keys": {device.user_id: {device.device_id: algorithm}}}
    found = ok(client.call("POST", "keys/claim", body))
    assert found["failures"] == {}
    return dict(found["one_time_keys"].get(device.user_id, {}).get(device.device_id, {}))


def sync(client: MatrixClient, since: str | None = None) -> dict[str, Any]:
    return dict(ok(client.sync(since=since)))


def lists(resp: dict[str, Any]) -> dict[str, list[str]]:
    return dict(resp["device_lists"])


def shared_room(a: MatrixClient, *others: MatrixClient) -> str:
    room_id = ok(a.create_room(preset="public_chat"))["room_id"]
    for other in others:
        ok(other.join(room_id))
    return str(room_id)


def password_auth(client: MatrixClient, session: str, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
        "session": session,
    }


# -- /keys/upload and /keys/query ------------------------------------------------------------


def test_upload_then_query_returns_the_signed_device_keys(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    counts = ok(alice.upload(device_keys=alice.device_keys(), one_time_keys=alice.otks(3)))
    assert counts == {"one_time_key_counts": {ALG: 3}}
    # Only one-time keys: the counts grow.
    assert ok(alice.upload(one_time_keys=alice.otks(2)))["one_time_key_counts"] == {ALG: 5}

    found = query(bob.client, alice.user_id, bob.user_id, "@someone:elsewhere.example")
    assert found["failures"] == {"elsewhere.example": found["failures"]["elsewhere.example"]}
    keys = found["device_keys"][alice.user_id][alice.device_id]
    expected = alice.device_keys()
    assert {k: keys[k] for k in expected} == expected
    assert found["device_keys"][bob.user_id] == {}  # bob uploaded nothing

    # Only the named devices.
    body = {"device_keys": {alice.user_id: ["NOSUCHDEVICE"]}}
    assert ok(bob.client.call("POST", "keys/query", body))["device_keys"][alice.user_id] == {}


def test_query_of_only_local_users_has_no_failures(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    ok(alice.upload(device_keys=alice.device_keys()))
    found = query(alice.client, alice.user_id)
    assert found["failures"] == {}
    assert list(found["device_keys"][alice.user_id]) == [alice.device_id]


def test_device_keys_with_a_bad_signature_are_rejected_and_nothing_is_stored(
    server: SingleServer,
) -> None:
    alice = new_device(server, "alice")
    tampered = alice.device_keys()
    tampered["algorithms"] = ["m.olm.v1.curve25519-aes-sha2"]  # changed after signing
    err(alice.upload(device_keys=tampered, one_time_keys=alice.otks(1)), 400, "M_INVALID_SIGNATURE")
    unsigned = alice.device_keys()
    del unsigned["signatures"]
    err(alice.upload(device_keys=unsigned), 400, "M_BAD_JSON")
    # Signed by another key than the one it names.
    impostor = Device(alice.client)
    forged = alice.device_keys()
    forged["signatures"] = sign_json(
        {k: v for k, v in forged.items() if k != "signatures"}, alice.user_id, impostor.signing_key
    )["signatures"]
    err(alice.upload(device_keys=forged), 400, "M_INVALID_SIGNATURE")
    assert query(alice.client, alice.user_id)["device_keys"][alice.user_id] == {}
    assert sync(alice.client)["device_one_time_keys_count"] == {ALG: 0}


def test_upload_rejects_bad_input(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    # Keys of another device or user.
    err(alice.upload(device_keys=bob.device_keys()), 400, "M_INVALID_PARAM")
    err(alice.upload(one_time_keys={"no_colon": {"key": "x"}}), 400, "M_INVALID_PARAM")
    err(alice.upload(one_time_keys={f"{ALG}:A": 5}), 400, "M_BAD_JSON")
    err(alice.upload(one_time_keys=["x"]), 400, "M_BAD_JSON")
    err(alice.upload(device_keys="keys"), 400, "M_BAD_JSON")
    err(alice.client.call("POST", "keys/upload", None), 400, "M_NOT_JSON")
    err(
        alice.upload(fallback_keys={f"{ALG}:A": {"key": "a"}, f"{ALG}:B": {"key": "b"}}),
        400,
        "M_INVALID_PARAM",
    )
    # A key ID reused with another key: refused, and the upload stores nothing.
    ok(alice.upload(one_time_keys={f"{ALG}:A": {"key": "one"}}))
    err(
        alice.upload(one_time_keys={f"{ALG}:B": {"key": "b"}, f"{ALG}:A": {"key": "two"}}),
        400,
        "M_INVALID_PARAM",
    )
    assert sync(alice.client)["device_one_time_keys_count"] == {ALG: 1}
    # The same key again is fine.
    assert ok(alice.upload(one_time_keys={f"{ALG}:A": {"key": "one"}}))["one_time_key_counts"] == {
        ALG: 1
    }
    err(alice.client.call("POST", "keys/query", {"device_keys": []}), 400, "M_BAD_JSON")
    body = {"device_keys": {alice.user_id: "all"}}
    err(alice.client.call("POST", "keys/query", body), 400, "M_BAD_JSON")
    err(alice.client.call("POST", "keys/claim", {"one_time_keys": 1}), 400, "M_BAD_JSON")
    bad_claim = {"one_time_keys": {alice.user_id: {alice.device_id: 1}}}
    err(alice.client.call("POST", "keys/claim", bad_claim), 400, "M_BAD_JSON")
    err(alice.client.call("POST", "keys/upload", {}, authed=False), 401, "M_MISSING_TOKEN")


# -- /keys/claim and the /sync counts ---------------------------------------------------------


def test_claims_take_one_key_each_then_the_fallback_key_and_sync_shows_it(
    server: SingleServer,
) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    fallback = {
        f"{ALG}:FB1": sign_json({"key": "fb", "fallback": True}, alice.user_id, alice.signing_key)
    }
    otks = alice.otks(2)
    ok(alice.upload(device_keys=alice.device_keys(), one_time_keys=otks, fallback_keys=fallback))
    first = sync(alice.client)
    assert first["device_one_time_keys_count"] == {ALG: 2}
    assert first["device_unused_fallback_key_types"] == [ALG]

    got = [claim(bob.client, alice), claim(bob.client, alice)]
    assert {k for c in got for k in c} == set(otks)  # each key handed out once
    assert all(len(c) == 1 for c in got)
    after = sync(alice.client, first["next_batch"])
    assert after["device_one_time_keys_count"] == {ALG: 0}
    assert after["device_unused_fallback_key_types"] == [ALG]

    # Out of one-time keys: the fallback key, again and again, now marked used.
    assert claim(bob.client, alice) == fallback
    assert claim(bob.client, alice) == fallback
    used = sync(alice.client, after["next_batch"])
    assert used["device_unused_fallback_key_types"] == []
    # A new fallback key is unused again.
    ok(alice.upload(fallback_keys={f"{ALG}:FB2": {"key": "fb2", "fallback": True}}))
    assert sync(alice.client)["device_unused_fallback_key_types"] == [ALG]

    # Nothing for another algorithm, or an unknown device or user.
    assert claim(bob.client, alice, "curve25519") == {}
    body = {"one_time_keys": {alice.user_id: {"NOSUCH": ALG}, "@nobody:localhost": {"X": ALG}}}
    assert ok(bob.client.call("POST", "keys/claim", body))["one_time_keys"] == {}


# -- device_lists in /sync and /keys/changes --------------------------------------------------


def test_key_upload_wakes_and_shows_in_changed_for_room_members_only(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    stranger = new_device(server, "stranger")
    shared_room(alice.client, bob.client)
    stranger_since = sync(stranger.client)["next_batch"]
    alice_since = sync(alice.client)["next_batch"]
    bob_since = sync(bob.client)["next_batch"]
    assert lists(sync(bob.client, bob_since)) == {"changed": [], "left": []}

    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["resp"] = bob.client.sync(since=bob_since, timeout_ms=20_000)

    thread = threading.Thread(target=long_poll)
    thread.start()
    server.wait_for_waiting_listeners(1)
    ok(alice.upload(device_keys=alice.device_keys()))
    thread.join(30)
    woken = dict(ok(answer["resp"]))
    assert alice.user_id in lists(woken)["changed"]
    # Her own sync shows her own change too; a stranger sees nothing.
    assert alice.user_id in lists(sync(alice.client, alice_since))["changed"]
    assert lists(sync(stranger.client, stranger_since)) == {"changed": [], "left": []}
    # Already seen: not again.
    assert lists(sync(bob.client, woken["next_batch"]))["changed"] == []

    # /keys/changes between the two tokens.
    changes = ok(
        bob.client.call(
            "GET", "keys/changes", params={"from": bob_since, "to": woken["next_batch"]}
        )
    )
    assert alice.user_id in changes["changed"] and changes["left"] == []
    nothing = ok(
        bob.client.call(
            "GET", "keys/changes", params={"from": woken["next_batch"], "to": woken["next_batch"]}
        )
    )
    assert nothing == {"changed": [], "left": []}


def test_keys_changes_rejects_bad_tokens(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    err(
        alice.client.call("GET", "keys/changes", params={"from": "bogus", "to": "s1"}),
        400,
        "M_INVALID_PARAM",
    )
    err(alice.client.call("GET", "keys/changes", params={"to": "s1"}), 400, "M_MISSING_PARAM")


def test_a_join_marks_the_joiner_changed_and_leaving_the_only_shared_room_marks_left(
    server: SingleServer,
) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    room_id = shared_room(alice.client)
    alice_since = sync(alice.client)["next_batch"]
    ok(bob.client.join(room_id))
    joined = sync(alice.client, alice_since)
    assert lists(joined) == {"changed": [bob.user_id], "left": []}
    # bob, newly joined, sees alice's list as changed.
    bob_since = sync(bob.client)["next_batch"]

    ok(bob.client.call("POST", f"rooms/{quote(room_id)}/leave", {}))
    left = sync(alice.client, joined["next_batch"])
    assert lists(left) == {"changed": [], "left": [bob.user_id]}
    # bob's own view: alice is left too.
    assert lists(sync(bob.client, bob_since))["left"] == [alice.user_id]

    # Still sharing another room: a leave is not "left".
    carol = new_device(server, "carol")
    first, second = shared_room(alice.client, carol.client), shared_room(alice.client, carol.client)
    since = sync(alice.client)["next_batch"]
    ok(carol.client.call("POST", f"rooms/{quote(first)}/leave", {}))
    assert lists(sync(alice.client, since))["left"] == []
    assert second


def test_newly_joined_room_members_are_changed_for_the_joiner(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    room_id = shared_room(alice.client)
    since = sync(bob.client)["next_batch"]
    ok(bob.client.join(room_id))
    assert lists(sync(bob.client, since))["changed"] == [alice.user_id]


# -- devices ----------------------------------------------------------------------------------


def test_list_get_and_rename_devices(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    shared_room(alice.client, bob.client)
    bob_since = sync(bob.client)["next_batch"]
    devices = ok(alice.client.call("GET", "devices"))["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    path = f"devices/{quote(alice.device_id)}"
    assert ok(alice.client.call("GET", path))["device_id"] == alice.device_id
    err(alice.client.call("GET", "devices/NOSUCHDEVICE"), 404, "M_NOT_FOUND")
    err(bob.client.call("GET", path), 404, "M_NOT_FOUND")  # not bob's device

    ok(alice.client.call("PUT", path, {"display_name": "Phone"}))
    assert ok(alice.client.call("GET", path)) == {
        "device_id": alice.device_id,
        "display_name": "Phone",
    }
    err(alice.client.call("PUT", "devices/NOSUCHDEVICE", {"display_name": "x"}), 404, "M_NOT_FOUND")
    err(alice.client.call("PUT", path, {"display_name": 5}), 400, "M_BAD_JSON")
    # A rename is a device list change.
    assert alice.user_id in lists(sync(bob.client, bob_since))["changed"]
    # The display name is served with the keys.
    ok(alice.upload(device_keys=alice.device_keys()))
    keys = query(bob.client, alice.user_id)["device_keys"][alice.user_id][alice.device_id]
    assert keys["unsigned"] == {"device_display_name": "Phone"}


def test_deleting_a_device_needs_the_password_and_removes_tokens_and_keys(
    server: SingleServer,
) -> None:
    alice = new_device(server, "alice")
    phone = server.client()
    ok(phone.login(alice.user_id))
    phone_device = Device(phone)
    ok(
        phone_device.upload(
            device_keys=phone_device.device_keys(), one_time_keys=phone_device.otks(1)
        )
    )
    watcher = new_device(server, "watcher")
    shared_room(alice.client, watcher.client)
    since = sync(watcher.client)["next_batch"]
    path = f"devices/{quote(phone_device.device_id)}"

    challenge = err_free_challenge(alice.client.call("DELETE", path, {}))
    # Wrong password, another user's identity, an unknown stage: 401 with the flows again.
    body = {"auth": password_auth(alice.client, challenge["session"], "wrong password")}
    failed = err(alice.client.call("DELETE", path, body), 401, "M_FORBIDDEN")
    assert failed["flows"] == [{"stages": ["m.login.password"]}]
    body = {
        "auth": {
            **password_auth(alice.client, challenge["session"]),
            "identifier": {"type": "m.id.user", "user": watcher.user_id},
        }
    }
    err(alice.client.call("DELETE", path, body), 401, "M_FORBIDDEN")
    err(
        alice.client.call("DELETE", path, {"auth": {"type": "m.login.dummy"}}),
        401,
        "M_UNRECOGNIZED",
    )
    assert ok(phone.whoami())["device_id"] == phone_device.device_id

    ok(
        alice.client.call(
            "DELETE", path, {"auth": password_auth(alice.client, challenge["session"])}
        )
    )
    err(phone.whoami(), 401, "M_UNKNOWN_TOKEN")
    assert query(alice.client, alice.user_id)["device_keys"][alice.user_id] == {}
    assert claim(alice.client, phone_device) == {}
    devices = ok(alice.client.call("GET", "devices"))["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    assert alice.user_id in lists(sync(watcher.client, since))["changed"]
    # Deleting it again is fine (already removed).
    ok(alice.client.call("DELETE", path, {"auth": password_auth(alice.client, "s")}))


def err_free_challenge(result: tuple[int, Any]) -> dict[str, Any]:
    status, body = result
    assert status == 401, result
    assert body["flows"] == [{"stages": ["m.login.password"]}]
    assert isinstance(body["session"], str) and "params" in body
    return dict(body)


def test_bulk_delete_devices(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    others = [server.client() for _ in range(2)]
    for other in others:
        ok(other.login(alice.user_id))
    ids = [o.device_id for o in others]
    challenge = err_free_challenge(alice.client.call("POST", "delete_devices", {"devices": ids}))
    err(alice.client.call("POST", "delete_devices", {"devices": "x"}), 400, "M_BAD_JSON")
    body = {"devices": [*ids, "NOSUCH"], "auth": password_auth(alice.client, challenge["session"])}
    ok(alice.client.call("POST", "delete_devices", body))
    for other in others:
        err(other.whoami(), 401, "M_UNKNOWN_TOKEN")
    assert [d["device_id"] for d in ok(alice.client.call("GET", "devices"))["devices"]] == [
        alice.device_id
    ]


def test_logout_removes_the_devices_keys(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    phone = server.client()
    ok(phone.login(alice.user_id))
    phone_device = Device(phone)
    ok(phone_device.upload(device_keys=phone_device.device_keys()))
    assert (
        phone_device.device_id in query(alice.client, alice.user_id)["device_keys"][alice.user_id]
    )
    ok(phone.call("POST", "logout", {}))
    assert query(alice.client, alice.user_id)["device_keys"][alice.user_id] == {}
    rows = server.query(
        "SELECT COUNT(*) FROM device_keys WHERE device_id = ?", (phone_device.device_id,)
    )
    assert rows == [(0,)]


def test_a_login_is_a_device_list_change(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    shared_room(alice.client, bob.client)
    since = sync(bob.client)["next_batch"]
    ok(server.client().login(alice.user_id))
    wait_until(
        lambda: alice.user_id in lists(sync(bob.client, since))["changed"],
        10,
        description="alice's new device in bob's device_lists.changed",
    )


# -- cross-signing ----------------------------------------------------------------------------


def _cross_signing_key(user_id: str, usage: str, signer: Any = None) -> tuple[Any, dict[str, Any]]:
    key = generate_signing_key("x")
    public = encode_verify_key_base64(get_verify_key(key))
    key.version = public
    body: dict[str, Any] = {
        "user_id": user_id,
        "usage": [usage],
        "keys": {f"ed25519:{public}": public},
    }
    if signer is not None:
        body = sign_json(body, user_id, signer)
    return key, body


def test_cross_signing_keys_and_signatures(server: SingleServer) -> None:
    alice = new_device(server, "alice")
    bob = new_device(server, "bob")
    ok(alice.upload(device_keys=alice.device_keys()))
    master, master_body = _cross_signing_key(alice.user_id, "master")
    ssk, ssk_body = _cross_signing_key(alice.user_id, "self_signing", master)
    usk, usk_body = _cross_signing_key(alice.user_id, "user_signing", master)
    # A self-signing key not signed by the master key.
    _, unsigned_ssk = _cross_signing_key(alice.user_id, "self_signing")
    body = {"master_key": master_body, "self_signing_key": unsigned_ssk}
    err(alice.client.call("POST", "keys/device_signing/upload", body), 400, "M_INVALID_SIGNATURE")
    err(
        alice.client.call("POST", "keys/device_signing/upload", {"self_signing_key": ssk_body}),
        400,
        "M_MISSING_PARAM",
    )
    # The first upload needs no password.
    body = {"master_key": master_body, "self_signing_key": ssk_body, "user_signing_key": usk_body}
    ok(alice.client.call("POST", "keys/device_signing/upload", body))
    found = query(bob.client, alice.user_id)
    assert found["master_keys"][alice.user_id]["keys"] == master_body["keys"]
    assert found["self_signing_keys"][alice.user_id]["keys"] == ssk_body["keys"]
    assert alice.user_id not in found["user_signing_keys"]  # only for herself
    assert query(alice.client, alice.user_id)["user_signing_keys"][alice.user_id] == usk_body
    # Replacing them needs the password.
    _, master2 = _cross_signing_key(alice.user_id, "master")
    err_free_challenge(
        alice.client.call("POST", "keys/device_signing/upload", {"master_key": master2})
    )

    # Her self-signing key signs her device; a bad signature is reported as a failure.
    device_keys = alice.device_keys()
    signed = sign_json(device_keys, alice.user_id, ssk)
    bad = dict(device_keys)
    bad["signatures"] = {alice.user_id: {f"ed25519:{ssk.version}": "AAAA"}}
    result = ok(
        alice.client.call(
            "POST",
            "keys/signatures/upload",
            {alice.user_id: {alice.device_id: signed, "NOSUCH": signed}},
        )
    )
    assert set(result["failures"][alice.user_id]) == {"NOSUCH"}
    result = ok(
        alice.client.call("POST", "keys/signatures/upload", {alice.user_id: {alice.device_id: bad}})
    )
    assert result["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    keys = query(bob.client, alice.user_id)["device_keys"][alice.user_id][alice.device_id]
    assert (
        keys["signatures"][alice.user_id][f"ed25519:{ssk.version}"]
        == signed["signatures"][alice.user_id][f"ed25519:{ssk.version}"]
    )
    assert usk is not None
