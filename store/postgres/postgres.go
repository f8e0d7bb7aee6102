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

	"github.com/outbox-dev/outbox/internal/appendsql"
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

func headersJSON(h map[string]string) ([]byte, error) { return appendsql.HeadersJSON(h) }

// aggregateHead is the CTE that orders an aggregate's events by commit
// (appendsql.AggregateHead).
func aggregateHead(typ, id, from string) string { return appendsql.AggregateHead(typ, id, from) }

// Append inserts messages into the outbox inside the caller's transaction,
// as pgxoutbox.Append does (the same statement): an aggregate's events
// are read back, by either source, in the order their transactions
// commit, whoever the caller.
func (s *Store) Append(ctx context.Context, tx pgx.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		m, headers, err := appendsql.Prepare(ctx, m)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, appendsql.Postgres, appendsql.PgxArgs(m, headers)...); err != nil {
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
