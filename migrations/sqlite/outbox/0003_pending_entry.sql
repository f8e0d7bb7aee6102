-- An operator's request names the dead-letter entry it was decided on, so
-- a request interrupted half-way and run again acts on that entry only.
ALTER TABLE outbox_parked_aggregates ADD COLUMN pending_entry INTEGER NOT NULL DEFAULT 0;
