-- Local room aliases (#localpart:server_name -> room ID). Publication in the room
-- directory is rooms.is_public (0001).
CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- The user who created the alias: they may delete it again.
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
CREATE INDEX rooms_public ON rooms (is_public);
