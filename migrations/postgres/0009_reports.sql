-- Content reports from users (events, rooms, users), kept for the server's administrators.
CREATE TABLE reports (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user TEXT,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX reports_kind ON reports (kind, id);
