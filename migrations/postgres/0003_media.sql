-- Media repository: one row per mxc URI. The bytes live on disk under <data_dir>/media/,
-- content-addressed by SHA-256 (identical uploads share one file); thumbnails are cached on
-- disk beside them, keyed by the content hash and the thumbnail parameters.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    -- Uploader (local media); NULL for copies of remote media.
    user_id TEXT,
    content_type TEXT,
    filename TEXT,
    -- NULL until the content is uploaded (asynchronous upload via /create).
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT,
    -- A media id created with /create and not uploaded to by then is void.
    unused_expires_ts BIGINT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_by_user ON media (user_id, created_ts);
CREATE INDEX media_by_sha256 ON media (sha256);
