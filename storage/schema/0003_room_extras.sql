-- Rooms a user has forgotten (POST /rooms/{roomId}/forget). A later membership event for
-- the user in the room clears the row (the room is no longer forgotten once they return).
CREATE TABLE room_forgotten (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    forgotten_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Content reports (POST /rooms/{roomId}/report[/{eventId}]); event_id is NULL for a room.
CREATE TABLE content_reports (
    report_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT,
    reporter TEXT NOT NULL,
    reason TEXT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX content_reports_room ON content_reports (room_id, received_ts);
