package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Orders is the order repository on this store: each change writes the
// order row and its outbox event in one transaction.
type Orders struct{ s *Store }

var _ order.Repository = Orders{}

// Orders returns the order repository.
func (s *Store) Orders() Orders { return Orders{s} }

const (
	orderColumns   = `id, customer_id, items, currency, address, status, total, version, created_at, updated_at`
	insertOrderSQL = `INSERT INTO orders (` + orderColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	updateOrderSQL = `UPDATE orders SET items = ?, address = ?, status = ?, total = ?, version = ?, updated_at = ?
		WHERE id = ? AND version = ?`
)

func scanOrder(sc interface{ Scan(...any) error }) (order.Order, error) {
	var o order.Order
	var items string
	var created, updated int64
	if err := sc.Scan(&o.ID, &o.CustomerID, &items, &o.Currency, &o.Address, &o.Status, &o.Total, &o.Version, &created, &updated); err != nil {
		return o, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return o, fmt.Errorf("items of order %s: %w", o.ID, err)
	}
	o.CreatedAt, o.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return o, nil
}

// Create implements order.Repository.
func (r Orders) Create(ctx context.Context, o order.Order, ev outbox.Message, key, hash string) (order.Order, bool, error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return o, false, err
	}
	replayed := false
	err = r.s.Transact(ctx, func(tx *sql.Tx) error {
		if key != "" {
			var seenHash, orderID string
			err := tx.QueryRowContext(ctx, `SELECT request_hash, order_id FROM order_idempotency_keys WHERE key = ?`, key).Scan(&seenHash, &orderID)
			switch {
			case err == nil && seenHash != hash:
				return order.ErrIdempotencyKey
			case err == nil:
				replayed = true
				o, err = scanOrder(tx.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, orderID))
				return err
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		if _, err := r.s.execTx(ctx, tx, insertOrderSQL,
			o.ID, o.CustomerID, string(items), o.Currency, o.Address, o.Status, o.Total, o.Version,
			o.CreatedAt.UnixMicro(), o.UpdatedAt.UnixMicro()); err != nil {
			return err
		}
		if key != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO order_idempotency_keys (key, request_hash, order_id, created_at) VALUES (?, ?, ?, ?)`,
				key, hash, o.ID, o.CreatedAt.UnixMicro()); err != nil {
				return err
			}
		}
		return r.s.Append(ctx, tx, ev)
	})
	if err != nil {
		return order.Order{}, false, fmt.Errorf("sqlite: create order: %w", err)
	}
	return o, replayed, nil
}

// Get implements order.Repository.
func (r Orders) Get(ctx context.Context, id string) (order.Order, error) {
	o, err := scanOrder(r.s.db.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("sqlite: order %s: %w", id, order.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("sqlite: order %s: %w", id, err)
	}
	return o, nil
}

// Update implements order.Repository.
func (r Orders) Update(ctx context.Context, o order.Order, ev outbox.Message) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return err
	}
	err = r.s.Transact(ctx, func(tx *sql.Tx) error {
		res, err := r.s.execTx(ctx, tx, updateOrderSQL, string(items), o.Address, o.Status, o.Total, o.Version, o.UpdatedAt.UnixMicro(), o.ID, o.Version-1)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(order.ErrConflict, err)
		}
		return r.s.Append(ctx, tx, ev)
	})
	if err != nil {
		return fmt.Errorf("sqlite: update order %s to version %d: %w", o.ID, o.Version, err)
	}
	return nil
}
