-- Idempotency keys expire (KeyCleaner): the cleaner deletes the oldest
-- keys first and must find them without scanning the table. Lookups by key
-- use the primary key.
CREATE INDEX IF NOT EXISTS order_idempotency_keys_created_at ON order_idempotency_keys (created_at);
