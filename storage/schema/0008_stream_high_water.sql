-- For streams kept only in memory on their writer (typing): the highest position a
-- writer may have handed out, reserved in blocks, so a restarted writer continues above
-- every position clients and followers already hold.
CREATE TABLE stream_high_water (
    stream TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
