-- Small named values the server keeps across restarts (e.g. how far the push sender got).
CREATE TABLE server_state (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
