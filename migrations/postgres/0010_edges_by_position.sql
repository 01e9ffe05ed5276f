-- Prev and auth edges keyed by the child event's stream position instead of its (random) event
-- id: a batch of new events then appends to the end of each b-tree instead of dirtying a leaf
-- page per event. The unused index on prev_event_id goes too.
CREATE TABLE event_edges_new (
    stream_ordering BIGINT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (stream_ordering, prev_event_id)
);
INSERT INTO event_edges_new (stream_ordering, prev_event_id)
SELECT e.stream_ordering, ed.prev_event_id FROM event_edges ed JOIN events e ON e.event_id = ed.event_id;
DROP TABLE event_edges;
ALTER TABLE event_edges_new RENAME TO event_edges;

CREATE TABLE event_auth_new (
    stream_ordering BIGINT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (stream_ordering, auth_event_id)
);
INSERT INTO event_auth_new (stream_ordering, auth_event_id)
SELECT e.stream_ordering, a.auth_event_id FROM event_auth a JOIN events e ON e.event_id = a.event_id;
DROP TABLE event_auth;
ALTER TABLE event_auth_new RENAME TO event_auth;
