-- Relations between events (`m.relates_to`), redactions, and which state event each
-- state event replaced. All three are written by a persist hook (storage/stores/relations.py).

-- One row per child event with a well-formed `m.relates_to`. A child whose redaction is
-- applied loses its row: a redacted child no longer relates to anything.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    aggregation_key TEXT,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- m.replace only: the child alone qualifies as an edit (m.new_content, not state).
    is_valid_replacement SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, stream_ordering);
CREATE INDEX event_relations_parent_type ON event_relations (relates_to_id, rel_type, stream_ordering);

-- One row per thread root, for listing a room's threads by their latest event.
CREATE TABLE thread_roots (
    room_id TEXT NOT NULL,
    root_event_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, root_event_id)
);
CREATE INDEX thread_roots_latest ON thread_roots (room_id, latest_stream_ordering);

-- One row per m.room.redaction event: event_id is the redaction, redacts its target.
CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts, stream_ordering);

-- For `unsigned.replaces_state` / `prev_content`: the state event each state event replaced.
CREATE TABLE state_replacements (
    event_id TEXT PRIMARY KEY,
    replaces_event_id TEXT NOT NULL
);
