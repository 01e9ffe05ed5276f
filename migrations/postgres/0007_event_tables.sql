-- The relation index only holds events that relate to something (every lookup is by a given
-- relates_to). (On SQLite this migration also turns stream_ordering into the rowid.)
DROP INDEX events_relates;
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
