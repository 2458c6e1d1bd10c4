-- Which device a device-list change was about: NULL for a change of a user's cross-signing
-- keys (sent to other servers as m.signing_key_update) and for other servers' users' changes.
-- Changes of this server's users' devices are sent as m.device_list_update whose prev_id is the
-- user's previous device change (a chain the receiver checks).
ALTER TABLE device_list_changes ADD COLUMN device_id TEXT;
-- 1: a change only the user's own devices hear of (a new user-signing key, a signature of
-- another user's key): not listed to room mates, not sent to other servers.
ALTER TABLE device_list_changes ADD COLUMN own_only INTEGER NOT NULL DEFAULT 0;

-- Other servers' users' device lists, cached while they share a room with a user of this
-- server (their servers then send every change): the user's `stream_id` as their server
-- numbers it (the end of the prev_id chain), the position here from which the cache is known
-- complete, and their cross-signing keys. No row: not cached (ask their server).
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    synced_pos BIGINT NOT NULL,
    master_key TEXT,
    self_signing_key TEXT
);

-- The devices of a cached remote device list: signed device keys as their server sent them.
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    keys TEXT,
    PRIMARY KEY (user_id, device_id)
);
