-- An operator's request names the dead-letter entry it was decided on, so
-- a request interrupted half-way and run again acts on that entry only.
ALTER TABLE outbox_parked_aggregates ADD COLUMN pending_entry INTEGER NOT NULL DEFAULT 0;

-- Recorded as applied, whoever applies this file (your migration tool or
-- outbox's), so outbox's own runner (outbox migrate, the relay's start)
-- applies only the files after it.
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
INSERT INTO outbox_schema_migrations (version, name, applied_at) VALUES (3, '0003_pending_entry.sql', CAST(strftime('%s', 'now') AS INTEGER) * 1000000) ON CONFLICT (version) DO NOTHING;
