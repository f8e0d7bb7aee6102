-- Debezium's outbox columns (id, aggregatetype, aggregateid, type, payload,
-- timestamp) plus ours: position (the polling order), sequence (the
-- aggregate's version) and headers (W3C traceparent and friends).
CREATE TABLE outbox (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    aggregatetype TEXT    NOT NULL,
    aggregateid   TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    headers       TEXT    NOT NULL DEFAULT '{}',
    timestamp     INTEGER NOT NULL -- unix microseconds
);

CREATE TABLE outbox_checkpoints (
    name       TEXT    PRIMARY KEY,
    position   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE outbox_dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    aggregatetype   TEXT    NOT NULL,
    aggregateid     TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    sequence        INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    headers         TEXT    NOT NULL DEFAULT '{}',
    timestamp       INTEGER NOT NULL,
    error           TEXT    NOT NULL,
    failure_count   INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    parked_behind   TEXT    NOT NULL DEFAULT '',
    replay_count    INTEGER NOT NULL DEFAULT 0,
    resolved_at     INTEGER,
    resolution      TEXT    NOT NULL DEFAULT ''
);
-- A relay re-reading after a crash must not park the same event twice.
CREATE UNIQUE INDEX outbox_dead_letters_parked_event ON outbox_dead_letters (event_id) WHERE status = 'parked';
CREATE INDEX outbox_dead_letters_aggregate ON outbox_dead_letters (aggregatetype, aggregateid, status, id);

CREATE TABLE outbox_parked_aggregates (
    aggregatetype  TEXT    NOT NULL,
    aggregateid    TEXT    NOT NULL,
    parked_at      INTEGER NOT NULL,
    pending_action TEXT    NOT NULL DEFAULT '',
    reason         TEXT    NOT NULL DEFAULT '',
    requested_at   INTEGER,
    last_error     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (aggregatetype, aggregateid)
);

-- Recorded as applied, whoever applies this file (your migration tool or
-- outbox's), so outbox's own runner (outbox migrate, the relay's start)
-- applies only the files after it.
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
INSERT INTO outbox_schema_migrations (version, name, applied_at) VALUES (1, '0001_outbox.sql', CAST(strftime('%s', 'now') AS INTEGER) * 1000000) ON CONFLICT (version) DO NOTHING;
