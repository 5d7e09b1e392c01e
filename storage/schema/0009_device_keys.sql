-- End-to-end encryption keys of devices, and the `device_lists` stream.

-- A device's identity keys as its client uploaded (and signed) them, JSON.
CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes the row it hands out.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; `used` once a claim handed it out.
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is "master", "self_signing" or "user_signing".
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded separately (/keys/signatures/upload), merged into the signed object
-- (a device's keys or a cross-signing key, by its key ID) when it is served.
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The `device_lists` stream: one row per change to a user's device list (position, user).
CREATE TABLE device_list_changes (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id)
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);
