-- Federation: remote signing keys, the durable outbound queue, inbound transaction ids,
-- per-destination retry state, and what a room's current state resolved to.

CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    key_json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

CREATE TABLE federation_outbox (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_dest ON federation_outbox (destination, id);

CREATE TABLE federation_txns_in (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    failures BIGINT NOT NULL DEFAULT 0,
    retry_at BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT
);

-- The snapshot of a room's current (resolved) state, when it is not the state after its latest
-- event (after state resolution across forks).
ALTER TABLE rooms ADD COLUMN current_snapshot BIGINT;

-- Stripped state shown with an invite from another server (the room is not known here yet).
CREATE TABLE invite_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stripped TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- What this server last announced to other servers about each local device
-- (`m.device_list_update`): a digest of the device's keys and display name ('' once deleted)
-- and the update's stream id, so each update names the previous one (`prev_id`).
CREATE TABLE device_list_outbound (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- OpenID tokens handed to local users (`/user/{userId}/openid/request_token`), checked by
-- other services through `/_matrix/federation/v1/openid/userinfo`.
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
