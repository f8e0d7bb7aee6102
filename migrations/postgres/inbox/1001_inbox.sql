-- The consumer's inbox (package inbox). A row per event a consumer
-- processed, written in the transaction that processed it: an event
-- delivered again (a relay's or a consumer's crash, a rebalance) finds its
-- row and is skipped. event_id is text, not uuid, so ids of any outbox
-- (a Debezium-style table's) fit. inbox.Cleanup deletes rows past the
-- retention window, oldest first, by processed_at.
CREATE TABLE IF NOT EXISTS outbox_inbox (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_inbox_processed_at ON outbox_inbox (consumer, processed_at);

-- The highest sequence each consumer processed per aggregate, for gap and
-- regression detection. It outlives the ids' retention: an old event
-- delivered again after its id was cleaned up is still seen as a
-- regression.
CREATE TABLE IF NOT EXISTS outbox_inbox_sequences (
    consumer      TEXT        NOT NULL,
    aggregatetype TEXT        NOT NULL,
    aggregateid   TEXT        NOT NULL,
    sequence      BIGINT      NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, aggregatetype, aggregateid)
);
