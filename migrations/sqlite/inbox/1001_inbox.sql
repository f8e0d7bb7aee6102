-- The consumer's inbox (package inbox). A row per event a consumer
-- processed, written in the transaction that processed it: an event
-- delivered again (a relay's or a consumer's crash, a rebalance) finds its
-- row and is skipped. inbox.Cleanup deletes rows past the retention
-- window, oldest first, by processed_at (unix microseconds).
CREATE TABLE IF NOT EXISTS outbox_inbox (
    consumer     TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_inbox_processed_at ON outbox_inbox (consumer, processed_at);

-- The highest sequence each consumer processed per aggregate, for gap and
-- regression detection. It outlives the ids' retention: an old event
-- delivered again after its id was cleaned up is still seen as a
-- regression.
CREATE TABLE IF NOT EXISTS outbox_inbox_sequences (
    consumer      TEXT    NOT NULL,
    aggregatetype TEXT    NOT NULL,
    aggregateid   TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (consumer, aggregatetype, aggregateid)
);

-- Recorded as applied, whoever applies this file (your migration tool or
-- outbox's), so outbox's own runner (outbox migrate, the relay's start)
-- applies only the files after it.
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
INSERT INTO outbox_schema_migrations (version, name, applied_at) VALUES (1001, '1001_inbox.sql', CAST(strftime('%s', 'now') AS INTEGER) * 1000000) ON CONFLICT (version) DO NOTHING;
