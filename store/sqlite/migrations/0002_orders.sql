CREATE TABLE orders (
    id          TEXT    PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    items       TEXT    NOT NULL, -- JSON array
    currency    TEXT    NOT NULL,
    address     TEXT    NOT NULL DEFAULT '',
    status      TEXT    NOT NULL,
    total       INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Idempotency-Key on create: the same key returns the same order.
CREATE TABLE order_idempotency_keys (
    key          TEXT    PRIMARY KEY,
    request_hash TEXT    NOT NULL,
    order_id     TEXT    NOT NULL REFERENCES orders (id),
    created_at   INTEGER NOT NULL
);
