package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Orders is the order repository on this store.
type Orders struct{ s *Store }

var _ order.Repository = Orders{}

// Orders returns the order repository.
func (s *Store) Orders() Orders { return Orders{s} }

const orderColumns = `id, customer_id, items, currency, address, status, total, version, created_at, updated_at`

func scanOrder(row pgx.Row) (order.Order, error) {
	var o order.Order
	var items []byte
	if err := row.Scan(&o.ID, &o.CustomerID, &items, &o.Currency, &o.Address, &o.Status, &o.Total, &o.Version, &o.CreatedAt, &o.UpdatedAt); err != nil {
		return o, err
	}
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
	return o, json.Unmarshal(items, &o.Items)
}

// insertWithEvent writes the order row and its event in one statement: a
// data-modifying CTE is atomic and costs one round trip instead of four
// (BEGIN, two INSERTs, COMMIT).
var insertWithEvent = `WITH o AS (
	INSERT INTO orders (` + orderColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
), ` + aggregateHead("$12", "$13", "") + `
INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp, txid)
SELECT $11, $12, $13, $14, $15, $16, $17, $18, txid FROM h`

// updateWithEvent changes the order if it is still at the expected version
// and, in the same statement, writes the event only if it did.
var updateWithEvent = `WITH u AS (
	UPDATE orders SET items = $1, address = $2, status = $3, total = $4, version = $5, updated_at = $6
	WHERE id = $7 AND version = $8 RETURNING id
), ` + aggregateHead("$10", "$11", "u") + `
INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp, txid)
SELECT $9, $10, $11, $12, $13, $14, $15, $16, txid FROM h`

func eventArgs(m outbox.Message) ([]any, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	headers, err := headersJSON(m.Headers)
	if err != nil {
		return nil, err
	}
	return []any{m.ID, m.AggregateType, m.AggregateID, m.Type, m.Sequence, []byte(m.Payload), headers, m.Timestamp}, nil
}

// Create implements order.Repository.
func (r Orders) Create(ctx context.Context, o order.Order, ev outbox.Message, key, hash string) (order.Order, bool, error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return o, false, err
	}
	if key == "" {
		evArgs, err := eventArgs(ev)
		if err != nil {
			return o, false, err
		}
		args := append([]any{o.ID, o.CustomerID, items, o.Currency, o.Address, string(o.Status), o.Total, o.Version, o.CreatedAt, o.UpdatedAt}, evArgs...)
		if _, err := r.s.pool.Exec(ctx, insertWithEvent, args...); err != nil {
			return order.Order{}, false, fmt.Errorf("postgres: create order: %w", unavailable(err))
		}
		r.s.poke()
		return o, false, nil
	}
	replayed := false
	err = r.s.Transact(ctx, func(tx pgx.Tx) error {
		if key != "" {
			// Serialise requests that share a key: the second waits, then
			// finds the first's order.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, key); err != nil {
				return err
			}
			var seenHash, orderID string
			err := tx.QueryRow(ctx, `SELECT request_hash, order_id FROM order_idempotency_keys WHERE key = $1`, key).Scan(&seenHash, &orderID)
			switch {
			case err == nil && seenHash != hash:
				return order.ErrIdempotencyKey
			case err == nil:
				replayed = true
				o, err = scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, orderID))
				return err
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO orders (`+orderColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			o.ID, o.CustomerID, items, o.Currency, o.Address, string(o.Status), o.Total, o.Version, o.CreatedAt, o.UpdatedAt); err != nil {
			return err
		}
		if key != "" {
			if _, err := tx.Exec(ctx, `INSERT INTO order_idempotency_keys (key, request_hash, order_id, created_at) VALUES ($1, $2, $3, $4)`,
				key, hash, o.ID, o.CreatedAt); err != nil {
				return err
			}
		}
		return r.s.Append(ctx, tx, ev)
	})
	if err != nil {
		return order.Order{}, false, fmt.Errorf("postgres: create order: %w", unavailable(err))
	}
	return o, replayed, nil
}

// Get implements order.Repository.
func (r Orders) Get(ctx context.Context, id string) (order.Order, error) {
	o, err := scanOrder(r.s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return o, fmt.Errorf("postgres: order %s: %w", id, order.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("postgres: order %s: %w", id, unavailable(err))
	}
	return o, nil
}

// Update implements order.Repository: compare-and-set on the version, the
// event written in the same statement only when the update matched.
func (r Orders) Update(ctx context.Context, o order.Order, ev outbox.Message) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return err
	}
	evArgs, err := eventArgs(ev)
	if err != nil {
		return err
	}
	args := append([]any{items, o.Address, string(o.Status), o.Total, o.Version, o.UpdatedAt, o.ID, o.Version - 1}, evArgs...)
	tag, err := r.s.pool.Exec(ctx, updateWithEvent, args...)
	if err != nil {
		return fmt.Errorf("postgres: update order %s to version %d: %w", o.ID, o.Version, unavailable(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: update order %s to version %d: %w", o.ID, o.Version, order.ErrConflict)
	}
	r.s.poke()
	return nil
}

// unavailable marks errors that say the database cannot be reached (a
// refused or broken connection, a server shutting down or starting) as
// order.ErrUnavailable, so the API answers 503 and the client retries,
// instead of 500. Such a write may or may not have committed; If-Match
// and Idempotency-Key make the retry safe.
func unavailable(err error) error {
	if err == nil || errors.Is(err, order.ErrUnavailable) {
		return err
	}
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		if !strings.HasPrefix(pgErr.Code, "08") && !strings.HasPrefix(pgErr.Code, "57P") {
			return err
		}
	case errors.As(err, &connErr), errors.As(err, &netErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, pgconn.ErrConnClosed),
		pgconn.SafeToRetry(err):
	default:
		return err
	}
	return fmt.Errorf("%w: %w", order.ErrUnavailable, err)
}
