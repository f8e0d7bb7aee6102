CREATE TABLE orders (
    id          TEXT        PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    items       JSONB       NOT NULL,
    currency    TEXT        NOT NULL,
    address     TEXT        NOT NULL DEFAULT '',
    status      TEXT        NOT NULL,
    total       BIGINT      NOT NULL,
    version     BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE order_idempotency_keys (
    key          TEXT        PRIMARY KEY,
    request_hash TEXT        NOT NULL,
    order_id     TEXT        NOT NULL REFERENCES orders (id),
    created_at   TIMESTAMPTZ NOT NULL
);
