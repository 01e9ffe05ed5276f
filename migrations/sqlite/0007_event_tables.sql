-- Fewer b-trees to write per event.
-- `events.stream_ordering` becomes the rowid (only INTEGER PRIMARY KEY is one in SQLite; the old
-- BIGINT PRIMARY KEY kept a second index beside a hidden rowid). The edge and auth tables are
-- WITHOUT ROWID: their primary key is all they hold. The relation index only holds events
-- that relate to something (every lookup is by a given relates_to).
CREATE TABLE events_new (
    stream_ordering INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    state_after BIGINT,
    rejected BIGINT NOT NULL DEFAULT 0,
    outlier BIGINT NOT NULL DEFAULT 0,
    redacted_by TEXT,
    rel_type TEXT,
    relates_to TEXT,
    thread_id TEXT,
    txn_id TEXT,
    txn_device TEXT,
    unsigned TEXT
);
INSERT INTO events_new (stream_ordering, event_id, room_id, type, state_key, sender, depth,
    origin_server_ts, json, state_after, rejected, outlier, redacted_by, rel_type, relates_to,
    thread_id, txn_id, txn_device, unsigned)
SELECT stream_ordering, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
    json, state_after, rejected, outlier, redacted_by, rel_type, relates_to, thread_id, txn_id,
    txn_device, unsigned
FROM events ORDER BY stream_ordering;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
CREATE INDEX events_thread ON events (room_id, thread_id, stream_ordering) WHERE thread_id IS NOT NULL;
CREATE INDEX events_thread_root ON events (thread_id) WHERE thread_id IS NOT NULL;
CREATE INDEX events_txn ON events (sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE event_edges_new (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
INSERT INTO event_edges_new (event_id, prev_event_id)
SELECT event_id, prev_event_id FROM event_edges;
DROP TABLE event_edges;
ALTER TABLE event_edges_new RENAME TO event_edges;
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth_new (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
) WITHOUT ROWID;
INSERT INTO event_auth_new (event_id, auth_event_id)
SELECT event_id, auth_event_id FROM event_auth;
DROP TABLE event_auth;
ALTER TABLE event_auth_new RENAME TO event_auth;
