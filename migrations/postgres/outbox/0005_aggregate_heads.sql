-- Polling reads in (txid, position) order below the oldest running
-- transaction. A transaction's id is taken at its first write, not at its
-- commit, so ordering rows by their writer's id alone can put a later
-- event of an aggregate first: T1 writes elsewhere, T2 appends A#1 and
-- commits, T1 appends A#2 and commits. Append therefore sets a row's txid
-- to the greater of its own transaction's id and the txid of the
-- aggregate's previous event, read and raised here under the row lock
-- that also serialises appends to one aggregate: an aggregate's txids
-- never decrease in commit order, and a row's txid is never below its
-- writer's, which keeps the no-skip rule of polling (DESIGN.md).
-- IF NOT EXISTS: postgres.PollSetupSQL creates the same table for the
-- trigger of a mapped table, and a user may run it before this migration.
CREATE TABLE IF NOT EXISTS outbox_aggregate_heads (
    aggregatetype TEXT NOT NULL,
    aggregateid   TEXT NOT NULL,
    txid          XID8 NOT NULL,
    PRIMARY KEY (aggregatetype, aggregateid)
);

-- Recorded as applied, whoever applies this file (your migration tool or
-- outbox's), so outbox's own runner (outbox migrate, the relay's start)
-- applies only the files after it.
CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
    version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
INSERT INTO outbox_schema_migrations (version, name) VALUES (5, '0005_aggregate_heads.sql') ON CONFLICT (version) DO NOTHING;
