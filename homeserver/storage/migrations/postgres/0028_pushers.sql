-- Pushers (spec: "Push notifications"): where a user's notifications go. One row per
-- (app_id, pushkey, user_id). `last_pos` is the pusher's durable cursor: every notification of
-- the user up to it was delivered to the gateway or given up on; `failing_since` is when
-- delivering the one after it first failed (retries give up a day later). `device_id` is the
-- device that set it: the pusher goes with the device.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    last_pos BIGINT NOT NULL,
    failing_since BIGINT,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_by_user ON pushers (user_id);
