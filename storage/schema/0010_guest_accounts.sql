-- Guest accounts (client-server API, "Guest Access"): registered with kind=guest, limited
-- to a subset of the API, and upgradable in place to a full account (same user ID).
ALTER TABLE users ADD COLUMN is_guest SMALLINT NOT NULL DEFAULT 0;
