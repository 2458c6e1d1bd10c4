-- End-to-end encryption, the server's part: devices' identity keys, one-time and fallback keys
-- (claimed by other users' devices to start Olm sessions), and to-device messages waiting for
-- their device.

-- A device's keys as its owner uploaded them (the signed JSON object, kept verbatim).
CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys: each handed out once, then deleted.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- Fallback keys: one per algorithm, handed out when the one-time keys run out (marked used).
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- To-device messages: written at a stream position, delivered by the device's syncs in
-- position order, deleted once a later sync of the device acknowledges them.
CREATE TABLE to_device_messages (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, pos)
);

-- A user's device list changed at a stream position (a device's keys uploaded or changed, a
-- device deleted): /sync's device_lists and /keys/changes tell the users sharing a room.
CREATE TABLE device_list_changes (
    user_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, pos)
);
CREATE INDEX device_list_changes_by_pos ON device_list_changes (pos);

-- Cross-signing keys: a user's master, self-signing and user-signing keys (signed JSON).
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    -- 'master', 'self_signing' or 'user_signing'
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
