-- The persisted per-user streams: receipts, account data, to-device messages, presence.
-- Each table's stream_id is a position of its own stream (written by that stream's single
-- writer); typing is kept in memory on its writer and has no table.

-- The latest receipt per (room, type, user, thread); thread_id '' is an unthreaded receipt.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- The receipted event's events-stream position: a receipt never moves backwards.
    event_stream_ordering BIGINT NOT NULL,
    -- The receipt's content as clients see it ({"ts": ..., "thread_id": ...}), JSON.
    data TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);

-- Account data: room_id '' is global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
CREATE INDEX account_data_stream ON account_data (stream_id);

-- Send-to-device messages waiting for their device; one stream_id per request.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);
CREATE INDEX device_inbox_stream ON device_inbox (stream_id);

-- A /sync response that delivered only part of a device's queue (the per-response limit):
-- a later `since` equal to since_pos acknowledges the messages up to delivered_up_to only.
CREATE TABLE device_inbox_partial (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    since_pos BIGINT NOT NULL,
    delivered_up_to BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, since_pos)
);

-- Client transaction IDs of /sendToDevice, per device, for idempotent retries.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
