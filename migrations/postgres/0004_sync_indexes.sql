-- Thread summaries and edits are looked up for many rooms' events at once, by the related
-- event's id alone (the room is checked against the root afterwards).
CREATE INDEX events_thread_root ON events (thread_id) WHERE thread_id IS NOT NULL;

-- Client transaction ids are looked up on the events themselves (which always carried them);
-- the separate table is no longer written.
CREATE INDEX events_txn ON events (sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;
DROP TABLE txn_ids;
