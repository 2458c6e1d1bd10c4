-- Thumbnails of media (ours and cached remote), generated once at one of the spec's sizes and
-- stored like media content: a file named by its SHA-256 under <data_dir>/media.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    -- 'crop' or 'scale'
    method TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);
-- Purging cached remote media by age.
CREATE INDEX media_by_origin_created ON media (origin, created_ts);
