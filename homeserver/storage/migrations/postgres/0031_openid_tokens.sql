-- OpenID tokens (`/user/{userId}/openid/request_token`): a third party shows one to
-- `/_matrix/federation/v1/openid/userinfo` to learn which user it belongs to, until it expires.
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_by_expiry ON openid_tokens (expires_ts);
