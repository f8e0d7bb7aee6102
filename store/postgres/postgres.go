// Package postgres is the PostgreSQL store (pgx v5): outbox rows appended
// in the caller's transaction, two sources (logical replication with
// pgoutput, the way Debezium captures, and polling for databases where
// the relay has no replication rights), dead letters, checkpoints, orders
// and cleanup of acknowledged rows.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/outbox"
)

// orderMigrations are the order service's tables; the outbox's are in
// package migrations (see migrate.go).
//
//go:embed migrations/*.sql
var orderMigrations embed.FS

// Store is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	dsn  string
	wake chan struct{}
	once sync.Once
}

// Open connects to dsn (a postgres:// URL or key=value string).
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse DSN: %w", redact(err))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return &Store{pool: pool, dsn: dsn, wake: make(chan struct{}, 1)}, nil
}

// redact keeps a DSN's password out of parse errors.
func redact(err error) error { return errors.New(strings.SplitN(err.Error(), "(", 2)[0]) }

// Pool exposes the pool for domain tables that share the database.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes the pool; it is safe to call more than once.
func (s *Store) Close() error {
	s.once.Do(s.pool.Close)
	return nil
}

// Transact runs fn in a transaction (commit on nil, roll back on error)
// and then wakes the polling source.
func (s *Store) Transact(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return err
	}
	s.poke()
	return nil
}

// poke wakes the polling source after an in-process commit.
func (s *Store) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Wake is signalled after each Transact commit.
func (s *Store) Wake() <-chan struct{} { return s.wake }

func headersJSON(h map[string]string) ([]byte, error) {
	if len(h) == 0 {
		return []byte("{}"), nil
	}
	return json.Marshal(h)
}

// aggregateHead is a CTE named h that raises and returns the ordering
// txid of an aggregate's next event: the greater of this transaction's id
// and that of the aggregate's previous event (migration 0005 says why).
// The upsert's row lock serialises appends to one aggregate until commit,
// so its events' txids follow commit order. from, when not empty, is a
// CTE that must return a row for the head to be written (an update that
// matched).
func aggregateHead(typ, id, from string) string {
	src := "VALUES (" + typ + "::text, " + id + "::text, pg_current_xact_id())"
	if from != "" {
		src = "SELECT " + typ + "::text, " + id + "::text, pg_current_xact_id() FROM " + from
	}
	return `h AS (
	INSERT INTO outbox_aggregate_heads AS head (aggregatetype, aggregateid, txid) ` + src + `
	ON CONFLICT (aggregatetype, aggregateid) DO UPDATE SET txid = greatest(head.txid, excluded.txid)
	RETURNING txid
)`
}

var appendSQL = `WITH ` + aggregateHead("$2", "$3", "") + `
INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp, txid)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, txid FROM h`

// Append inserts messages into the outbox inside the caller's transaction.
// An aggregate's events are read back, by either source, in the order
// their transactions commit, whoever the caller: appends to one aggregate
// wait for each other's commit. Under REPEATABLE READ or SERIALIZABLE, an
// append that would come after an aggregate's event committed since the
// transaction began fails with a serialization error (40001), to be
// retried like any other.
func (s *Store) Append(ctx context.Context, tx pgx.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
		headers, err := headersJSON(m.Headers)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, appendSQL,
			m.ID, m.AggregateType, m.AggregateID, m.Type, m.Sequence, []byte(m.Payload), headers, m.Timestamp); err != nil {
			return fmt.Errorf("postgres: append outbox message %s: %w", m.ID, err)
		}
	}
	return nil
}

func scanMessage(m *outbox.Message, payload, headers []byte, ts time.Time) error {
	m.Payload = payload
	if len(headers) > 0 && string(headers) != "{}" {
		if err := json.Unmarshal(headers, &m.Headers); err != nil {
			return fmt.Errorf("headers of %s: %w", m.ID, err)
		}
	}
	m.Timestamp = ts.UTC()
	return nil
}

// CountRows reports the rows in the order and outbox tables.
func (s *Store) CountRows(ctx context.Context) (orders, events int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)`).Scan(&orders, &events)
	return orders, events, err
}

// Settings reports the durability settings that matter for benchmarks.
func (s *Store) Settings(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, name := range []string{"synchronous_commit", "fsync", "wal_level", "server_version"} {
		var v string
		if err := s.pool.QueryRow(ctx, "SHOW "+name).Scan(&v); err == nil {
			out[name] = v
		}
	}
	return out
}
