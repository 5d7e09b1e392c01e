"""End-to-end encryption keys: upload, query, claim, changes, cross-signing and signatures.

Validation (shapes and signatures) is pure and runs wherever the request arrives; the writes
run on the `device_lists` stream's writer (`KeyWriter`); reads run anywhere (`KeyReader`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json

from homeserver.handlers.device_lists import DeviceListWriter
from homeserver.http.errors import MatrixError, bad_param, bad_type
from storage.stores.devices import DeviceStore
from storage.stores.keys import KeyConflict, KeyStore

JsonDict = dict[str, Any]
CROSS_SIGNING_TYPES = {
    "master_key": "master",
    "self_signing_key": "self_signing",
    "user_signing_key": "user_signing",
}


def invalid_signature(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_SIGNATURE", message)


def _decode_ed25519(key_id: str, public_key: Any) -> Any:
    """A verify key from an unpadded base64 ed25519 public key, else 400."""
    if not isinstance(public_key, str):
        raise bad_param(f"key {key_id!r} must be a string")
    try:
        raw = base64.b64decode(public_key + "=" * (-len(public_key) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad_param(f"key {key_id!r} is not base64") from None
    if len(raw) != 32:
        raise bad_param(f"key {key_id!r} is not an ed25519 public key")
    return decode_verify_key_bytes(key_id, raw)


def signed_by(obj: JsonDict, signer: str, key_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature of `signer`'s ed25519 key `key_id`."""
    try:
        verify_key = _decode_ed25519(key_id, public_key)
        verify_signed_json(obj, signer, verify_key)
    except (SignatureVerifyException, MatrixError, ValueError, TypeError, KeyError):
        return False
    return True


def _require_string_map(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_type(f"{name} must be an object of strings")
    return value


def validate_device_keys(user_id: str, device_id: str, device_keys: Any) -> JsonDict:
    """The device's identity keys, signed by the device's own ed25519 key."""
    if not isinstance(device_keys, dict):
        raise bad_type("device_keys must be an object")
    if device_keys.get("user_id") != user_id or device_keys.get("device_id") != device_id:
        raise bad_param("device_keys.user_id and device_id must be the uploading device's")
    algorithms = device_keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_type("device_keys.algorithms must be a list of strings")
    keys = _require_string_map(device_keys.get("keys"), "device_keys.keys")
    signatures = device_keys.get("signatures")
    if not isinstance(signatures, dict) or not isinstance(signatures.get(user_id), dict):
        raise bad_type("device_keys.signatures must hold the device's signature")
    ed25519_id = f"ed25519:{device_id}"
    if ed25519_id not in keys:
        raise bad_param(f"device_keys.keys must hold the device's key {ed25519_id!r}")
    _decode_ed25519(ed25519_id, keys[ed25519_id])
    if not signed_by(device_keys, user_id, ed25519_id, keys[ed25519_id]):
        raise invalid_signature("device_keys is not signed by the device's ed25519 key")
    return device_keys


def validate_key_map(value: Any, name: str) -> dict[str, Any]:
    """one_time_keys / fallback_keys: "<algorithm>:<key id>" -> a key string or object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_type(f"{name} must be an object")
    for key_id, key in value.items():
        algorithm, sep, ident = key_id.partition(":")
        if not sep or not algorithm or not ident:
            raise bad_param(f"{name}: key ID {key_id!r} must be '<algorithm>:<key id>'")
        if not isinstance(key, str | dict):
            raise bad_type(f"{name}[{key_id!r}] must be a string or an object")
    algorithms = [k.split(":", 1)[0] for k in value]
    if name == "fallback_keys" and len(set(algorithms)) != len(algorithms):
        raise bad_param("fallback_keys may hold one key per algorithm")
    return value


def _single_ed25519(key: JsonDict, name: str) -> tuple[str, str]:
    keys = _require_string_map(key.get("keys"), f"{name}.keys")
    if len(keys) != 1:
        raise bad_param(f"{name}.keys must hold exactly one key")
    ((key_id, public_key),) = keys.items()
    if not key_id.startswith("ed25519:"):
        raise bad_param(f"{name}.keys must hold an ed25519 key")
    _decode_ed25519(key_id, public_key)
    return key_id, public_key


def validate_cross_signing_key(user_id: str, key: Any, name: str, usage: str) -> tuple[str, str]:
    """(key ID, public key) of a cross-signing key object."""
    if not isinstance(key, dict):
        raise bad_type(f"{name} must be an object")
    if key.get("user_id") != user_id:
        raise bad_param(f"{name}.user_id must be the uploading user")
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise bad_param(f"{name}.usage must contain {usage!r}")
    return _single_ed25519(key, name)


def _strip(obj: JsonDict) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _merge_signatures(obj: JsonDict, extra: Mapping[str, Mapping[str, str]]) -> JsonDict:
    if not extra:
        return obj
    out = dict(obj)
    signatures = {s: dict(v) for s, v in (obj.get("signatures") or {}).items()}
    for signer, sigs in extra.items():
        signatures.setdefault(signer, {}).update(sigs)
    out["signatures"] = signatures
    return out


def public_key_of(key: JsonDict) -> str | None:
    keys = key.get("keys")
    if isinstance(keys, dict) and len(keys) == 1:
        value = next(iter(keys.values()))
        return value if isinstance(value, str) else None
    return None


class KeyReader:
    """Reads, on any process."""

    def __init__(self, server_name: str, keys: KeyStore) -> None:
        self.server_name = server_name
        self.keys = keys

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    async def query(self, requester: str, wanted: Mapping[str, list[str]]) -> JsonDict:
        device_keys: dict[str, JsonDict] = {}
        master_keys: dict[str, JsonDict] = {}
        self_signing: dict[str, JsonDict] = {}
        user_signing: dict[str, JsonDict] = {}
        failures: dict[str, JsonDict] = {}
        for user_id, device_ids in wanted.items():
            if not self.is_local(user_id):
                server = user_id.split(":", 1)[1] if ":" in user_id else user_id
                failures[server] = {"status": 503, "message": "Federation is not supported"}
                continue
            signatures = await self.keys.get_signatures(user_id)
            devices = await self.keys.get_device_keys(user_id, device_ids or None)
            device_keys[user_id] = {
                d: _merge_signatures(k, signatures.get(d, {})) for d, k in devices.items()
            }
            cross = await self.keys.get_cross_signing_keys(user_id)
            for key_type, out in (
                ("master", master_keys),
                ("self_signing", self_signing),
                ("user_signing", user_signing),
            ):
                key = cross.get(key_type)
                if key is None or (key_type == "user_signing" and user_id != requester):
                    continue
                pub = public_key_of(key)
                # Others' signatures of a master key are shown to their signer only.
                extra = {
                    s: v
                    for s, v in signatures.get(pub or "", {}).items()
                    if s in (user_id, requester)
                }
                out[user_id] = _merge_signatures(key, extra)
        result: JsonDict = {"device_keys": device_keys, "failures": failures}
        result["master_keys"] = master_keys
        result["self_signing_keys"] = self_signing
        result["user_signing_keys"] = user_signing
        return result


class KeyWriter:
    """Writes, on the device_lists writer."""

    def __init__(
        self, server_name: str, keys: KeyStore, devices: DeviceStore, lists: DeviceListWriter
    ) -> None:
        self.server_name = server_name
        self.keys = keys
        self.devices = devices
        self.lists = lists

    async def upload(
        self,
        user_id: str,
        device_id: str,
        device_keys: JsonDict | None,
        one_time_keys: Mapping[str, Any],
        fallback_keys: Mapping[str, Any],
    ) -> dict[str, int]:
        async def store(pos: int) -> dict[str, int]:
            try:
                counts, _ = await self.keys.upload(
                    pos, user_id, device_id, device_keys, one_time_keys, fallback_keys
                )
            except KeyConflict as e:
                message = f"one-time key {e.key_id} already exists with another value"
                raise bad_param(message) from None
            return counts

        if device_keys is None:
            # No device list change: no position needed.
            return await store(0)
        return await self.lists.write(user_id, store)

    async def claim(self, wanted: Mapping[str, Mapping[str, str]]) -> JsonDict:
        claimed: dict[str, dict[str, JsonDict]] = {}
        failures: dict[str, JsonDict] = {}
        for user_id, by_device in wanted.items():
            if not user_id.endswith(":" + self.server_name):
                server = user_id.split(":", 1)[1] if ":" in user_id else user_id
                failures[server] = {"status": 503, "message": "Federation is not supported"}
                continue
            known = {d.device_id for d in await self.devices.get_devices(user_id)}
            for device_id, algorithm in by_device.items():
                if device_id not in known:
                    continue
                found = await self.keys.claim(user_id, device_id, algorithm)
                if found is not None:
                    key_id, key = found
                    claimed.setdefault(user_id, {}).setdefault(device_id, {})[key_id] = key
        return {"one_time_keys": claimed, "failures": failures}

    async def upload_cross_signing(self, user_id: str, keys: Mapping[str, JsonDict]) -> None:
        async def store(pos: int) -> None:
            await self.keys.set_cross_signing_keys(pos, user_id, keys)

        await self.lists.write(user_id, store)

    async def upload_signatures(
        self, requester: str, body: Mapping[str, Mapping[str, Any]]
    ) -> JsonDict:
        """Verifies and stores the requester's signatures of the objects in `body`; returns
        the failures per user and key ID."""
        failures: dict[str, dict[str, JsonDict]] = {}
        signer_keys = await self._signing_keys_of(requester)
        rows: list[tuple[str, str, str, str, str]] = []

        def fail(user_id: str, key_id: str, errcode: str, message: str) -> None:
            failures.setdefault(user_id, {})[key_id] = {"errcode": errcode, "error": message}

        for user_id, objects in body.items():
            stored = await self._signable_keys_of(user_id, requester)
            for key_id, signed in objects.items():
                target = stored.get(key_id)
                if target is None:
                    fail(user_id, key_id, "M_NOT_FOUND", "No such key")
                    continue
                if not isinstance(signed, dict) or _strip(signed) != _strip(target):
                    fail(user_id, key_id, "M_INVALID_SIGNATURE", "The object differs from the key")
                    continue
                sigs = (signed.get("signatures") or {}).get(requester)
                if not isinstance(sigs, dict) or not sigs:
                    fail(user_id, key_id, "M_INVALID_SIGNATURE", "No signature of the requester")
                    continue
                new_rows: list[tuple[str, str, str, str, str]] = []
                for signer_key_id, signature in sigs.items():
                    public_key = signer_keys.get(signer_key_id)
                    one = {**_strip(signed), "signatures": {requester: {signer_key_id: signature}}}
                    if (
                        public_key is None
                        or not isinstance(signature, str)
                        or not signed_by(one, requester, signer_key_id, public_key)
                    ):
                        new_rows = []
                        fail(user_id, key_id, "M_INVALID_SIGNATURE", "Invalid signature")
                        break
                    new_rows.append((user_id, key_id, requester, signer_key_id, signature))
                rows.extend(new_rows)
        if rows:

            async def store(pos: int) -> None:
                await self.keys.add_signatures(pos, rows)

            await self.lists.write(requester, store)
            for signed_user in sorted({r[0] for r in rows} - {requester}):
                await self.lists.note_change(signed_user)
        return {"failures": failures}

    async def _signing_keys_of(self, user_id: str) -> dict[str, str]:
        """key ID -> public key of every key `user_id` may sign with."""
        out: dict[str, str] = {}
        for device_id, keys in (await self.keys.get_device_keys(user_id, None)).items():
            public_key = (keys.get("keys") or {}).get(f"ed25519:{device_id}")
            if isinstance(public_key, str):
                out[f"ed25519:{device_id}"] = public_key
        for key in (await self.keys.get_cross_signing_keys(user_id)).values():
            public_key = public_key_of(key)
            if public_key is not None:
                out[f"ed25519:{public_key}"] = public_key
        return out

    async def _signable_keys_of(self, user_id: str, requester: str) -> dict[str, JsonDict]:
        """Target key ID -> object for what `requester` may sign of `user_id`'s keys: all of
        their own devices and cross-signing keys; another user's master key only."""
        out: dict[str, JsonDict] = {}
        cross = await self.keys.get_cross_signing_keys(user_id)
        for key_type, key in cross.items():
            public_key = public_key_of(key)
            if public_key is not None and (user_id == requester or key_type == "master"):
                out[public_key] = key
        if user_id == requester:
            for device_id, keys in (await self.keys.get_device_keys(user_id, None)).items():
                keys.pop("unsigned", None)
                out[device_id] = keys
        return out


def cross_signing_upload(
    user_id: str, body: Mapping[str, Any], stored: Mapping[str, JsonDict]
) -> dict[str, JsonDict]:
    """Validates a /keys/device_signing/upload body against the stored keys; returns the
    keys to store by type ("master", ...)."""
    new: dict[str, JsonDict] = {}
    for field, key_type in CROSS_SIGNING_TYPES.items():
        key = body.get(field)
        if key is None:
            continue
        validate_cross_signing_key(user_id, key, field, key_type)
        new[key_type] = key
    master = new.get("master") or stored.get("master")
    if master is None:
        raise MatrixError(400, "M_MISSING_PARAM", "No master key is available")
    master_id, master_public = _single_ed25519(master, "master_key")
    for key_type in ("self_signing", "user_signing"):
        key = new.get(key_type)
        if key is not None and not signed_by(key, user_id, master_id, master_public):
            raise invalid_signature(f"the {key_type} key is not signed by the master key")
    return new


def changed_cross_signing(new: Mapping[str, JsonDict], stored: Mapping[str, JsonDict]) -> bool:
    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    return any(canon(key) != canon(stored.get(t)) for t, key in new.items())
