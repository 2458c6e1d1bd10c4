-- Whether the user counted as currently active when their presence was last written: a
-- state of its own (it lapses a minute after activity, and room mates are told), not derived
-- from last_active_ts on read.
ALTER TABLE presence ADD COLUMN currently_active INTEGER NOT NULL DEFAULT 0;
