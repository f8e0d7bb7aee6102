package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/thejerf/suture/v4"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// backend is a store as the command sees it: the adapters below pick the
// source, the repository and the extra workers each store needs.
type backend interface {
	outbox.DeadLetterStore
	httpapi.DeadLetters
	Ping(ctx context.Context) error
	Migrate(ctx context.Context) (int, error)
	Close() error
	orders() order.Repository
	// source builds the relay's source (and sets up what it needs).
	source(ctx context.Context, cfg config, log *slog.Logger) (outbox.Source, error)
	// backlog counts events not yet acknowledged, when the store knows.
	backlog(ctx context.Context) (int64, error)
	// workers are extra supervised services (cleanup).
	workers(cfg config, log *slog.Logger) map[string]suture.Service
	// details adds store-specific figures to /status.
	details(ctx context.Context) map[string]any
	// appendEvents commits events outside any order (the demo's poison).
	appendEvents(ctx context.Context, msgs ...outbox.Message) error
	// committed lists every event in the outbox, for the checker.
	committed(ctx context.Context) ([]checker.Event, error)
	// insertPlain writes an order row without its event (a benchmark's
	// baseline).
	insertPlain(ctx context.Context, o order.Order) error
	// durability describes the settings that decide what a commit costs.
	durability(ctx context.Context) map[string]string
	// slotLag reports the replication slot's lag in bytes (ok false when
	// the source has no slot).
	slotLag(ctx context.Context) (bytes int64, ok bool, err error)
	// cdcLag reports how long the oldest unacknowledged change has waited
	// and the CDC log's TTL (ok false when the source keeps no such log).
	cdcLag() (lag, ttl time.Duration, ok bool)
	// CountRows counts order and outbox rows (chaos: a refused request
	// must change neither).
	CountRows(ctx context.Context) (orders, events int64, err error)
}

func openBackend(ctx context.Context, cfg config, log *slog.Logger) (backend, error) {
	scheme, _, _ := strings.Cut(cfg.Store, "://")
	switch scheme {
	case "sqlite":
		path, _ := parseStoreURL(cfg.Store)
		s, err := sqlite.Open(ctx, path, sqlite.Config{})
		if err != nil {
			return nil, err
		}
		return &sqliteBackend{Store: s}, nil
	case "postgres", "postgresql":
		s, err := postgres.Open(ctx, cfg.Store)
		if err != nil {
			return nil, err
		}
		return &postgresBackend{Store: s}, nil
	case "scylla":
		b, err := openScylla(cfg.Store, cfg.ScyllaPassword, cfg.IdempotencyTTL)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, usagef("--store scheme %q is unknown (sqlite, postgres or scylla)", scheme)
}

// sourceKind names how the relay captures events, defaults included.
func sourceKind(cfg config) string {
	if cfg.Source != "" {
		return cfg.Source
	}
	if strings.HasPrefix(cfg.Store, "sqlite://") {
		return "poll"
	}
	return "cdc"
}

type sqliteBackend struct{ *sqlite.Store }

func (b *sqliteBackend) orders() order.Repository { return b.Store.Orders() }
func (b *sqliteBackend) source(_ context.Context, cfg config, log *slog.Logger) (outbox.Source, error) {
	if cfg.Source != "" && cfg.Source != "poll" {
		return nil, usagef("--source %s: SQLite is read by polling; use --source poll", cfg.Source)
	}
	return poll.NewSource(b.Store, poll.Config{Interval: cfg.PollInterval, Wake: b.Wake(), Lock: b.RelayLock("default"), Logger: log})
}
func (b *sqliteBackend) backlog(ctx context.Context) (int64, error) { return b.Backlog(ctx, "default") }
func (b *sqliteBackend) workers(cfg config, log *slog.Logger) map[string]suture.Service {
	return map[string]suture.Service{"idempotency-keys": must(b.NewKeyCleaner(sqlite.KeyCleanerConfig{
		Retention: cfg.IdempotencyTTL, Logger: log.With("worker", "idempotency-keys")}))}
}

// must is for constructors whose input validate already checked.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("outbox: configuration passed validation but was refused: %v", err))
	}
	return v
}
func (b *sqliteBackend) details(context.Context) map[string]any {
	return map[string]any{"store": "sqlite", "source": "poll"}
}
func (b *sqliteBackend) appendEvents(ctx context.Context, msgs ...outbox.Message) error {
	return b.Transact(ctx, func(tx *sql.Tx) error { return b.Append(ctx, tx, msgs...) })
}
func (b *sqliteBackend) insertPlain(ctx context.Context, o order.Order) error {
	return b.Store.Orders().InsertPlain(ctx, o)
}
func (b *sqliteBackend) durability(context.Context) map[string]string {
	return map[string]string{"sqlite_journal_mode": "WAL", "sqlite_synchronous": "FULL"}
}
func (b *sqliteBackend) slotLag(context.Context) (int64, bool, error) { return 0, false, nil }
func (b *sqliteBackend) cdcLag() (time.Duration, time.Duration, bool) { return 0, 0, false }
func (b *sqliteBackend) committed(ctx context.Context) ([]checker.Event, error) {
	recs, err := b.Fetch(ctx, "", 1<<30)
	return historyOf(recs), err
}

func historyOf(recs []outbox.Record) []checker.Event {
	out := make([]checker.Event, 0, len(recs))
	for _, r := range recs {
		out = append(out, committedEvent(r.Message))
	}
	return out
}

// committedEvent is the history line of a message as the store holds it.
func committedEvent(m outbox.Message) checker.Event {
	return checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: m.Sequence,
		Key: m.AggregateID, Type: m.Type, Payload: checker.Digest(m.Payload)}
}

type postgresBackend struct {
	*postgres.Store
	cdc  *postgres.CDCSource
	kind string
}

func (b *postgresBackend) orders() order.Repository { return b.Store.Orders() }

func (b *postgresBackend) source(ctx context.Context, cfg config, log *slog.Logger) (outbox.Source, error) {
	switch cfg.Source {
	case "", "cdc":
		src, err := b.CDC(postgres.CDCConfig{Slot: cfg.Slot, RecreateSlot: cfg.RecreateSlot, Logger: log})
		if err != nil {
			return nil, usageError{err}
		}
		// Create the publication and slot now, before any write, so no
		// event commits before the slot exists.
		if _, err := src.Setup(ctx); err != nil {
			return nil, err
		}
		b.cdc, b.kind = src, "cdc"
		return src, nil
	case "poll":
		b.kind = "poll"
		return poll.NewSource(b.Store, poll.Config{Interval: cfg.PollInterval, Wake: b.Wake(), Lock: b.RelayLock("default"), Logger: log})
	}
	return nil, usagef("--source must be cdc or poll, got %q", cfg.Source)
}

func (b *postgresBackend) backlog(ctx context.Context) (int64, error) {
	if b.kind == "poll" {
		return b.Backlog(ctx, "default")
	}
	return 0, nil // CDC: the slot's lag in bytes is in details
}

func (b *postgresBackend) workers(cfg config, log *slog.Logger) map[string]suture.Service {
	w := map[string]suture.Service{"idempotency-keys": must(b.NewKeyCleaner(postgres.KeyCleanerConfig{
		Retention: cfg.IdempotencyTTL, Logger: log.With("worker", "idempotency-keys")}))}
	if cfg.Retention > 0 {
		horizon := b.PollCleanupHorizon("default")
		if b.cdc != nil {
			horizon = b.cdc.CleanupHorizon()
		}
		w["cleanup"] = b.NewCleaner(horizon, postgres.CleanupConfig{Retention: cfg.Retention, Logger: log.With("worker", "cleanup")})
	}
	return w
}

func (b *postgresBackend) cdcLag() (time.Duration, time.Duration, bool) { return 0, 0, false }

func (b *postgresBackend) slotLag(ctx context.Context) (int64, bool, error) {
	if b.cdc == nil {
		return 0, false, nil
	}
	lag, err := b.cdc.SlotLag(ctx)
	return lag, true, err
}

func (b *postgresBackend) details(ctx context.Context) map[string]any {
	d := map[string]any{"store": "postgres", "source": b.kind}
	if b.cdc != nil {
		if lag, err := b.cdc.SlotLag(ctx); err == nil {
			d["slot_lag_bytes"] = lag
		} else {
			d["slot_error"] = err.Error()
		}
		d["confirmed_lsn"] = b.cdc.ConfirmedLSN().String()
	}
	return d
}

func (b *postgresBackend) appendEvents(ctx context.Context, msgs ...outbox.Message) error {
	return b.Transact(ctx, func(tx pgx.Tx) error { return b.Append(ctx, tx, msgs...) })
}

func (b *postgresBackend) insertPlain(ctx context.Context, o order.Order) error {
	return b.Store.Orders().InsertPlain(ctx, o)
}
func (b *postgresBackend) durability(ctx context.Context) map[string]string { return b.Settings(ctx) }

func (b *postgresBackend) committed(ctx context.Context) ([]checker.Event, error) {
	rows, err := b.Pool().Query(ctx, `SELECT id::text, aggregatetype, aggregateid, sequence, type, payload::text FROM outbox ORDER BY position`)
	if err != nil {
		return nil, fmt.Errorf("postgres: read outbox: %w", err)
	}
	defer rows.Close()
	var out []checker.Event
	for rows.Next() {
		var e checker.Event
		var typ, agg, payload string
		if err := rows.Scan(&e.ID, &typ, &agg, &e.Sequence, &e.Type, &payload); err != nil {
			return nil, err
		}
		e.Op, e.Aggregate, e.Key, e.Payload = checker.OpCommit, typ+"/"+agg, agg, checker.Digest([]byte(payload))
		out = append(out, e)
	}
	return out, rows.Err()
}
