-- Room state at every event, stored as state groups.
--
-- A state group is a complete state map (type, state_key) -> event_id. It is stored either
-- as a full snapshot (prev_group NULL) or as a delta against prev_group; chain_length counts
-- the deltas between the group and its snapshot, and the writer starts a new snapshot before
-- it would exceed the configured bound, so reading any group touches at most that many
-- groups plus one snapshot. Groups never change once written.
--
-- Group IDs are derived from the stream ordering of the event whose persist created them
-- (2 * stream_ordering for a resolved "before" state, 2 * stream_ordering + 1 for the
-- "after" state), so they need no sequence and are identical on both engines.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    prev_group BIGINT,
    chain_length INTEGER NOT NULL,
    room_id TEXT NOT NULL
);

-- The entries of a group: the whole map for a snapshot, only what changed for a delta.
-- event_id NULL means the key is absent from this group though present in prev_group.
-- The writer never writes a key twice per group, so only the group is indexed.
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT
);
CREATE INDEX state_group_entries_group ON state_group_entries (state_group);

-- Each persisted event (by its stream ordering, which is the events table's key) mapped to
-- the group of the state after it. For a state event, state_group_before is the group of
-- the state before it (NULL: the empty state, i.e. before m.room.create); for any other
-- event the state before equals the state after and the column is NULL.
CREATE TABLE event_state_groups (
    stream_ordering BIGINT PRIMARY KEY,
    state_group BIGINT NOT NULL,
    state_group_before BIGINT
);
