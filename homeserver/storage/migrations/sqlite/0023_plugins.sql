-- WASM plugins: each plugin's delivery cursor over the event stream and lifecycle state, the
-- events it could not take (dead letters), its key-value store and its timers.
CREATE TABLE plugin_state (
    plugin_id TEXT PRIMARY KEY NOT NULL,
    -- Every live event up to here has been delivered (or dead-lettered).
    stream_pos BIGINT NOT NULL,
    -- The plugin version whose migrate succeeded last (NULL: never started).
    version TEXT,
    -- Disabled by the admin: nothing is called, events wait.
    disabled BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE plugin_dead_letters (
    plugin_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    error TEXT NOT NULL,
    failed_ts BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, stream_pos)
);
CREATE TABLE plugin_kv (
    plugin_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    version BIGINT NOT NULL,
    -- ms since the epoch after which the entry is gone (NULL: never).
    expires_ts BIGINT,
    PRIMARY KEY (plugin_id, key)
);
CREATE TABLE plugin_timers (
    plugin_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    due_ts BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, tag)
);
-- The plugin whose bot an account is (NULL: a person's account). A plugin only ever acts as an
-- account it owns, so a configured bot name cannot take over someone's account.
ALTER TABLE users ADD COLUMN plugin_owner TEXT;
