-- Filters uploaded with POST /user/{userId}/filter. filter_id is derived from the
-- filter's canonical JSON, so uploading the same filter again gives the same ID.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id TEXT NOT NULL,
    filter_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
