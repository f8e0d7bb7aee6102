-- Debezium's outbox columns plus ours: position (insert order), sequence
-- (the aggregate's version), headers, and txid, the writing transaction,
-- which the polling source needs to never skip a row committed late.
CREATE TABLE outbox (
    position      BIGSERIAL   PRIMARY KEY,
    id            UUID        NOT NULL UNIQUE,
    aggregatetype TEXT        NOT NULL,
    aggregateid   TEXT        NOT NULL,
    type          TEXT        NOT NULL,
    sequence      BIGINT      NOT NULL,
    payload       JSONB       NOT NULL,
    headers       JSONB       NOT NULL DEFAULT '{}',
    timestamp     TIMESTAMPTZ NOT NULL,
    txid          XID8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX outbox_txid_position ON outbox (txid, position);

CREATE TABLE outbox_checkpoints (
    name       TEXT        PRIMARY KEY,
    position   TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE outbox_dead_letters (
    id              BIGSERIAL   PRIMARY KEY,
    event_id        UUID        NOT NULL,
    aggregatetype   TEXT        NOT NULL,
    aggregateid     TEXT        NOT NULL,
    type            TEXT        NOT NULL,
    sequence        BIGINT      NOT NULL,
    payload         JSONB       NOT NULL,
    headers         JSONB       NOT NULL DEFAULT '{}',
    timestamp       TIMESTAMPTZ NOT NULL,
    error           TEXT        NOT NULL,
    failure_count   INT         NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL,
    last_failed_at  TIMESTAMPTZ NOT NULL,
    status          TEXT        NOT NULL,
    parked_behind   TEXT        NOT NULL DEFAULT '',
    replay_count    INT         NOT NULL DEFAULT 0,
    resolved_at     TIMESTAMPTZ,
    resolution      TEXT        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX outbox_dead_letters_parked_event ON outbox_dead_letters (event_id) WHERE status = 'parked';
CREATE INDEX outbox_dead_letters_aggregate ON outbox_dead_letters (aggregatetype, aggregateid, status, id);

CREATE TABLE outbox_parked_aggregates (
    aggregatetype  TEXT        NOT NULL,
    aggregateid    TEXT        NOT NULL,
    parked_at      TIMESTAMPTZ NOT NULL,
    pending_action TEXT        NOT NULL DEFAULT '',
    reason         TEXT        NOT NULL DEFAULT '',
    requested_at   TIMESTAMPTZ,
    last_error     TEXT        NOT NULL DEFAULT '',
    PRIMARY KEY (aggregatetype, aggregateid)
);

-- Recorded as applied, whoever applies this file (your migration tool or
-- outbox's), so outbox's own runner (outbox migrate, the relay's start)
-- applies only the files after it.
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
INSERT INTO outbox_schema_migrations (version, name) VALUES (1, '0001_outbox.sql') ON CONFLICT (version) DO NOTHING;
