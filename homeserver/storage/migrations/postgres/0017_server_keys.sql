-- Verify keys of other servers, as fetched from them or from a notary. `response_json` is the
-- signed key response the key came in, kept so this server can serve it again as a notary;
-- `expired_ts` is set for keys the server listed as old (`old_verify_keys`).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    response_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
