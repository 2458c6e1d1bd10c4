-- Guest accounts (the spec's guest access): created by `POST /register?kind=guest`, limited to
-- the endpoints the spec lists, until upgraded to a full account (which clears the flag).
ALTER TABLE users ADD COLUMN is_guest BIGINT NOT NULL DEFAULT 0;
