-- The media repository: one row per media id (ours: origin = this server). The content is a
-- file named by its SHA-256 under <data_dir>/media (shared by identical uploads); `sha256` is
-- NULL while an asynchronous upload (POST /media/v1/create) waits for its content, until
-- `expires_ts`.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    sha256 TEXT,
    content_type TEXT NOT NULL,
    filename TEXT,
    size BIGINT NOT NULL,
    uploader TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT,
    -- Served by the legacy unauthenticated endpoints (uploaded while they were on).
    legacy_visible BIGINT NOT NULL DEFAULT 0,
    quarantined BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_by_uploader ON media (uploader);
CREATE INDEX media_by_sha256 ON media (sha256);
