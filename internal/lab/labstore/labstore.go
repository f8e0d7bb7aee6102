// Package labstore gives the lab tooling (demo, bench, chaos) what it
// needs of a store beyond what the service uses: the outbox's whole
// history, row counts, a plain order insert and events appended outside
// any order. It reaches each database through the handle its store
// exposes (DB, Pool, Session), so the product stores carry no test
// helpers.
package labstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/pgxoutbox"
	"github.com/outbox-dev/outbox/sqloutbox"
)

type (
	sqliteDB   interface{ DB() *sql.DB }
	postgresDB interface{ Pool() *pgxpool.Pool }
	scyllaDB   interface {
		Session() *gocql.Session
		Keyspace() string
		AppendEvents(ctx context.Context, msgs ...outbox.Message) error
	}
)

func unknown(store any) error { return fmt.Errorf("labstore: %T is not a store the lab knows", store) }

// Committed lists every event in the store's outbox as the checker's
// history, each aggregate's in order.
func Committed(ctx context.Context, store any) ([]checker.Event, error) {
	const q = `SELECT id, aggregatetype, aggregateid, sequence, type, payload FROM outbox ORDER BY position`
	switch s := store.(type) {
	case postgresDB:
		rows, err := s.Pool().Query(ctx, `SELECT id::text, aggregatetype, aggregateid, sequence, type, payload::text FROM outbox ORDER BY position`)
		if err != nil {
			return nil, fmt.Errorf("labstore: read outbox: %w", err)
		}
		defer rows.Close()
		var out []checker.Event
		for rows.Next() {
			var id, typ, agg, evType, payload string
			var seq int64
			if err := rows.Scan(&id, &typ, &agg, &seq, &evType, &payload); err != nil {
				return nil, err
			}
			out = append(out, event(id, typ, agg, seq, evType, []byte(payload)))
		}
		return out, rows.Err()
	case sqliteDB:
		rows, err := s.DB().QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("labstore: read outbox: %w", err)
		}
		defer rows.Close()
		var out []checker.Event
		for rows.Next() {
			var id, typ, agg, evType string
			var payload []byte
			var seq int64
			if err := rows.Scan(&id, &typ, &agg, &seq, &evType, &payload); err != nil {
				return nil, err
			}
			out = append(out, event(id, typ, agg, seq, evType, payload))
		}
		return out, rows.Err()
	case scyllaDB:
		iter := s.Session().Query(`SELECT id, aggregatetype, aggregateid, type, sequence, payload FROM ` + s.Keyspace() + `.outbox_messages`).
			WithContext(ctx).PageSize(5000).Iter()
		var out []checker.Event
		var id gocql.UUID
		var typ, agg, evType, payload string
		var seq int64
		for iter.Scan(&id, &typ, &agg, &evType, &seq, &payload) {
			out = append(out, event(uuid.UUID(id).String(), typ, agg, seq, evType, []byte(payload)))
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("labstore: scan outbox: %w", err)
		}
		return out, nil
	}
	return nil, unknown(store)
}

func event(id, aggType, agg string, seq int64, evType string, payload []byte) checker.Event {
	return checker.Event{Op: checker.OpCommit, ID: id, Aggregate: aggType + "/" + agg, Sequence: seq,
		Key: agg, Type: evType, Payload: checker.Digest(payload)}
}

// CountRows counts order and outbox rows (a refused request must change
// neither).
func CountRows(ctx context.Context, store any) (orders, events int64, err error) {
	const q = `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)`
	switch s := store.(type) {
	case postgresDB:
		err = s.Pool().QueryRow(ctx, q).Scan(&orders, &events)
	case sqliteDB:
		err = s.DB().QueryRowContext(ctx, q).Scan(&orders, &events)
	case scyllaDB:
		if err = s.Session().Query(`SELECT count(*) FROM ` + s.Keyspace() + `.orders`).WithContext(ctx).Scan(&orders); err == nil {
			err = s.Session().Query(`SELECT count(*) FROM ` + s.Keyspace() + `.outbox_messages`).WithContext(ctx).Scan(&events)
		}
	default:
		err = unknown(store)
	}
	return orders, events, err
}

// InsertPlain writes an order row alone, without its event: the baseline
// a benchmark compares the order-and-outbox write against.
func InsertPlain(ctx context.Context, store any, o order.Order) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return err
	}
	const cols = `id, customer_id, items, currency, address, status, total, version, created_at, updated_at`
	switch s := store.(type) {
	case postgresDB:
		_, err = s.Pool().Exec(ctx, `INSERT INTO orders (`+cols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			o.ID, o.CustomerID, items, o.Currency, o.Address, string(o.Status), o.Total, o.Version, o.CreatedAt, o.UpdatedAt)
	case sqliteDB:
		_, err = s.DB().ExecContext(ctx, `INSERT INTO orders (`+cols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			o.ID, o.CustomerID, string(items), o.Currency, o.Address, string(o.Status), o.Total, o.Version, o.CreatedAt.UnixMicro(), o.UpdatedAt.UnixMicro())
	case scyllaDB:
		err = s.Session().Query(`INSERT INTO `+s.Keyspace()+`.orders (`+cols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			o.ID, o.CustomerID, string(items), o.Currency, o.Address, string(o.Status), o.Total, o.Version, o.CreatedAt.UnixMicro(), o.UpdatedAt.UnixMicro()).
			WithContext(ctx).Exec()
	default:
		err = unknown(store)
	}
	return err
}

// AppendEvents commits msgs with no order, through the public writers
// (the demo's poison event, a benchmark's backlog).
func AppendEvents(ctx context.Context, store any, msgs ...outbox.Message) error {
	switch s := store.(type) {
	case postgresDB:
		return pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error { return pgxoutbox.Append(ctx, tx, msgs...) })
	case sqliteDB:
		tx, err := s.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := sqloutbox.AppendSQLite(ctx, tx, msgs...); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	case scyllaDB:
		return s.AppendEvents(ctx, msgs...)
	}
	return unknown(store)
}

// Durability describes the settings that decide what a commit costs.
func Durability(ctx context.Context, store any) map[string]string {
	switch s := store.(type) {
	case postgresDB:
		out := map[string]string{}
		for _, name := range []string{"synchronous_commit", "fsync", "wal_level", "server_version"} {
			var v string
			if err := s.Pool().QueryRow(ctx, "SHOW "+name).Scan(&v); err == nil {
				out[name] = v
			}
		}
		return out
	case sqliteDB:
		out := map[string]string{}
		for _, name := range []string{"journal_mode", "synchronous"} {
			var v string
			if err := s.DB().QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err == nil {
				out["sqlite_"+name] = v
			}
		}
		return out
	case scyllaDB:
		return map[string]string{"scylla_batch": "LOGGED", "scylla_order_writes": "lightweight transactions"}
	}
	return nil
}
