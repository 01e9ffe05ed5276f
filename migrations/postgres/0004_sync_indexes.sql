-- Thread summaries and edits are looked up for many rooms' events at once, by the related
-- event's id alone (the room is checked against the root afterwards).
CREATE INDEX events_thread_root ON events (thread_id) WHERE thread_id IS NOT NULL;
