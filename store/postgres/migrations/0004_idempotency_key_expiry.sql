-- Idempotency keys expire (KeyCleaner): the cleaner deletes the oldest
-- keys first and must find them without scanning the table. Lookups by key
-- use the primary key. IF NOT EXISTS lets an operator whose table is
-- already large build the index beforehand with CREATE INDEX CONCURRENTLY
-- under this name, since a plain CREATE INDEX blocks inserts while it runs
-- and migrations run inside a transaction.
CREATE INDEX IF NOT EXISTS order_idempotency_keys_created_at ON order_idempotency_keys (created_at);
