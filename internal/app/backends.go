package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// Store is a database as the one-shot commands (dlq, migrate) see it.
type Store interface {
	outbox.DeadLetterStore
	httpapi.DeadLetters
	Ping(ctx context.Context) error
	Migrate(ctx context.Context) (int, error)
	Close() error
}

// Backend is a store with what the service runs on it: the order
// repository, the relay's source (built with the backend, so nothing
// depends on a call made first), and the store's own workers and figures.
// Lab tooling reaches a backend's database through a type assertion
// (DB, Pool or Session), not through this interface.
type Backend interface {
	Store
	Orders() order.Repository
	Source() outbox.Source
	// Unpublished counts events not yet acknowledged, when the store
	// knows (polling); 0 otherwise.
	Unpublished(ctx context.Context) (int64, error)
	// Workers are the store's supervised services (cleanup, sweeper).
	Workers(log *slog.Logger) map[string]suture.Service
	// Details adds store-specific figures to /status.
	Details(ctx context.Context) map[string]any
	// SlotLag is the replication slot's lag in bytes (ok false: no slot).
	SlotLag(ctx context.Context) (bytes int64, ok bool, err error)
	// CDCLag is how long the oldest unacknowledged change has waited and
	// the CDC log's TTL (ok false: the source keeps no such log).
	CDCLag() (lag, ttl time.Duration, ok bool)
}

// OpenStore connects to cfg's store and brings its schema up to date.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (Store, error) {
	b, _, err := open(ctx, cfg, log, false)
	return b, err
}

// OpenExisting is OpenStore for a store that must exist already: a
// missing SQLite file is a usage error, not a new empty database.
func OpenExisting(ctx context.Context, cfg Config, log *slog.Logger) (Store, error) {
	if err := cfg.validated(); err != nil {
		return nil, err
	}
	if cfg.store.Kind == SQLite {
		if _, err := os.Stat(cfg.store.Path); err != nil {
			return nil, Usagef("--store %s: %v (run outbox migrate or outbox serve first)", cfg.store, err)
		}
	}
	return OpenStore(ctx, cfg, log)
}

// Open connects, migrates and builds the relay's source; on PostgreSQL
// CDC it creates the publication and the slot now, before any write, so
// no event commits before the slot exists.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (Backend, error) {
	b, _, err := open(ctx, cfg, log, true)
	return b, err
}

// Migrate brings cfg's store up to date and sets up its source (on
// PostgreSQL CDC: the publication and the slot), and reports how many
// migrations it applied.
// On PostgreSQL polling of a mapped table it applies, idempotently, the
// statements of postgres.PollSetupSQL (PollSetupSQL prints them).
func Migrate(ctx context.Context, cfg Config, log *slog.Logger) (int, error) {
	cfg.migrating = true
	b, n, err := open(ctx, cfg, log, true)
	if err != nil {
		return n, err
	}
	return n, b.Close()
}

func open(ctx context.Context, cfg Config, log *slog.Logger, withSource bool) (Backend, int, error) {
	if err := cfg.validated(); err != nil {
		return nil, 0, err
	}
	b, err := connect(ctx, cfg, log)
	if err != nil {
		return nil, 0, err
	}
	var n int
	switch {
	case cfg.OutboxOnly || cfg.mapping != nil:
		// A service of the user's: outbox's tables, no orders table.
		n, err = b.MigrateOutboxOnly(ctx)
	case cfg.relayOnly && cfg.store.Kind != Scylla:
		// outbox relay never creates the order service's tables: only
		// outbox serve (and outbox migrate) do. ScyllaDB's outbox and
		// orders share one schema.
		n, err = b.MigrateOutboxOnly(ctx)
	default:
		n, err = b.Migrate(ctx)
	}
	if err == nil && withSource {
		err = b.build(ctx, cfg, log.With("worker", "relay"))
	}
	if err != nil {
		b.Close()
		return nil, n, err
	}
	return b, n, nil
}

// backend is what each adapter below implements.
type backend interface {
	Backend
	MigrateOutboxOnly(ctx context.Context) (int, error)
	build(ctx context.Context, cfg Config, log *slog.Logger) error
}

// mappingError makes a mapping that does not fit its table (a missing
// column, one of the wrong type) a configuration error: exit 2, with the
// store's message, which names the table, the column and the key.
func mappingError(err error) error {
	if errors.Is(err, mapping.ErrInvalid) {
		return UsageError{Err: err}
	}
	return err
}

func connect(ctx context.Context, cfg Config, log *slog.Logger) (backend, error) {
	switch cfg.store.Kind {
	case SQLite:
		s, err := sqlite.Open(ctx, cfg.store.Path, sqlite.Config{})
		if err != nil {
			return nil, err
		}
		return &sqliteBackend{Store: s, cfg: cfg}, nil
	case Postgres:
		s, err := postgres.Open(ctx, cfg.store.Raw)
		if err != nil {
			return nil, err
		}
		return &postgresBackend{Store: s, cfg: cfg}, nil
	case Scylla:
		st := cfg.store.Scylla
		// A URL with a user and no password takes it from
		// OUTBOX_SCYLLA_PASSWORD (or _FILE), out of ps and logs.
		if st.Config.Username != "" && st.Config.Password == "" {
			st.Config.Password = cfg.ScyllaPassword
		}
		if st.Config.IdempotencyTTL == 0 {
			st.Config.IdempotencyTTL = cfg.IdempotencyTTL
		}
		st.Config.Logger = log
		s, err := scylla.Open(st.Config)
		if err != nil {
			return nil, err
		}
		return &scyllaBackend{Store: s, settings: st, cfg: cfg}, nil
	}
	return nil, errors.New("app: configuration not validated")
}

// must is for constructors whose input validate already checked.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("outbox: configuration passed validation but was refused: %v", err))
	}
	return v
}

type sqliteBackend struct {
	*sqlite.Store
	cfg    Config
	src    outbox.Source
	table  *sqlite.Table // with a mapping
	orders bool          // the order service's tables exist
}

func (b *sqliteBackend) build(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	if err := b.DB().QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'order_idempotency_keys'`).Scan(&b.orders); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if cfg.mapping != nil {
		if b.table, err = b.Table(ctx, sqlite.TableConfig{Mapping: cfg.mapping, Logger: log}); err != nil {
			return mappingError(err)
		}
		b.src, err = poll.NewSource(b.table, poll.Config{Interval: cfg.PollInterval, Lock: b.RelayLock("default"), Logger: log})
		return err
	}
	b.src, err = poll.NewSource(b.Store, poll.Config{Interval: cfg.PollInterval, Wake: b.Wake(), Lock: b.RelayLock("default"), Logger: log})
	return err
}
func (b *sqliteBackend) Orders() order.Repository { return b.Store.Orders() }
func (b *sqliteBackend) Source() outbox.Source    { return b.src }
func (b *sqliteBackend) Unpublished(ctx context.Context) (int64, error) {
	if b.table != nil {
		return b.table.Backlog(ctx, "default")
	}
	return b.Backlog(ctx, "default")
}
func (b *sqliteBackend) Workers(log *slog.Logger) map[string]suture.Service {
	w := map[string]suture.Service{}
	// A library user's database (outbox relay after migrate
	// --outbox-only) has no idempotency keys to clean.
	if b.orders {
		w["idempotency-keys"] = must(b.NewKeyCleaner(sqlite.KeyCleanerConfig{
			Retention: b.cfg.IdempotencyTTL, Logger: log.With("worker", "idempotency-keys")}))
	}
	return w
}
func (b *sqliteBackend) Details(context.Context) map[string]any {
	return map[string]any{"store": "sqlite", "source": "poll"}
}
func (b *sqliteBackend) SlotLag(context.Context) (int64, bool, error) { return 0, false, nil }
func (b *sqliteBackend) CDCLag() (time.Duration, time.Duration, bool) { return 0, 0, false }

type postgresBackend struct {
	*postgres.Store
	cfg    Config
	src    outbox.Source
	cdc    *postgres.CDCSource // nil when polling
	table  *postgres.Table     // polling with a mapping
	orders bool                // the order service's tables exist
}

func (b *postgresBackend) build(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := b.Pool().QueryRow(ctx, `SELECT to_regclass('order_idempotency_keys') IS NOT NULL`).Scan(&b.orders); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if cfg.source == "poll" && cfg.mapping != nil {
		if cfg.migrating {
			ddl, err := postgres.PollSetupSQL(*cfg.mapping)
			if err != nil {
				return mappingError(err)
			}
			if _, err := b.Pool().Exec(ctx, ddl); err != nil {
				return mappingError(fmt.Errorf("postgres: setting %s up for polling: %w", cfg.mapping.Table, err))
			}
			log.Info("set up for polling: the position and txid columns, their indexes and the commit-order trigger", "table", cfg.mapping.Table)
		}
		t, err := b.Table(ctx, postgres.TableConfig{Mapping: cfg.mapping, Logger: log})
		if err != nil {
			return mappingError(err)
		}
		b.table = t
		b.src, err = poll.NewSource(t, poll.Config{Interval: cfg.PollInterval, Lock: b.RelayLock("default"), Logger: log})
		return err
	}
	if cfg.source == "poll" {
		src, err := poll.NewSource(b.Store, poll.Config{Interval: cfg.PollInterval, Wake: b.Wake(), Lock: b.RelayLock("default"), Logger: log})
		b.src = src
		return err
	}
	src, err := b.CDC(postgres.CDCConfig{Slot: cfg.Slot, RecreateSlot: cfg.RecreateSlot, Mapping: cfg.mapping, Logger: log})
	if err != nil {
		return UsageError{Err: err}
	}
	if _, err := src.Setup(ctx); err != nil {
		return mappingError(err)
	}
	b.src, b.cdc = src, src
	return nil
}
func (b *postgresBackend) Orders() order.Repository { return b.Store.Orders() }
func (b *postgresBackend) Source() outbox.Source    { return b.src }
func (b *postgresBackend) Unpublished(ctx context.Context) (int64, error) {
	if b.table != nil {
		return b.table.Backlog(ctx, "default")
	}
	if b.cdc == nil {
		return b.Backlog(ctx, "default")
	}
	return 0, nil // CDC: the slot's lag in bytes is in Details
}
func (b *postgresBackend) Workers(log *slog.Logger) map[string]suture.Service {
	w := map[string]suture.Service{}
	// A library user's database (outbox relay after migrate
	// --outbox-only) has no idempotency keys to clean.
	if b.orders {
		w["idempotency-keys"] = must(b.NewKeyCleaner(postgres.KeyCleanerConfig{
			Retention: b.cfg.IdempotencyTTL, Logger: log.With("worker", "idempotency-keys")}))
	}
	// A mapped table is the user's: its rows are theirs to delete.
	if b.cfg.Retention > 0 && b.cfg.mapping == nil {
		horizon := b.PollCleanupHorizon("default")
		if b.cdc != nil {
			horizon = b.cdc.CleanupHorizon()
		}
		w["cleanup"] = b.NewCleaner(horizon, postgres.CleanupConfig{Retention: b.cfg.Retention, Logger: log.With("worker", "cleanup")})
	}
	return w
}
func (b *postgresBackend) CDCLag() (time.Duration, time.Duration, bool) { return 0, 0, false }
func (b *postgresBackend) SlotLag(ctx context.Context) (int64, bool, error) {
	if b.cdc == nil {
		return 0, false, nil
	}
	lag, err := b.cdc.SlotLag(ctx)
	return lag, true, err
}
func (b *postgresBackend) Details(ctx context.Context) map[string]any {
	d := map[string]any{"store": "postgres", "source": b.cfg.source}
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

// scyllaBackend runs the system on ScyllaDB: order writes by lightweight
// transactions, the CDC source under a lease, and the sweeper that
// finishes interrupted order writes.
type scyllaBackend struct {
	*scylla.Store
	settings scylla.URLConfig
	cfg      Config
	cdc      *scylla.Source
}

func (b *scyllaBackend) build(_ context.Context, _ Config, log *slog.Logger) error {
	c := b.settings.CDC
	c.Logger = log
	b.cdc = b.CDC(c)
	return nil
}
func (b *scyllaBackend) Migrate(ctx context.Context) (int, error) {
	return b.Store.Migrate(ctx, b.settings.Schema)
}
func (b *scyllaBackend) MigrateOutboxOnly(context.Context) (int, error) {
	return 0, Usagef("--outbox-only: ScyllaDB's outbox and orders share one schema; use outbox migrate")
}
func (b *scyllaBackend) Orders() order.Repository                   { return b.Store.Orders() }
func (b *scyllaBackend) Source() outbox.Source                      { return b.cdc }
func (b *scyllaBackend) Unpublished(context.Context) (int64, error) { return 0, nil }
func (b *scyllaBackend) Workers(log *slog.Logger) map[string]suture.Service {
	return map[string]suture.Service{"order-sweeper": b.NewSweeper(scylla.SweeperConfig{Interval: 30 * time.Second, Logger: log.With("worker", "order-sweeper")})}
}
func (b *scyllaBackend) Details(context.Context) map[string]any {
	d := map[string]any{"store": "scylla", "source": "cdc", "keyspace": b.settings.Config.Keyspace}
	if lag, ttl, ok := b.CDCLag(); ok {
		d["cdc_lag_seconds"], d["cdc_log_ttl_seconds"] = lag.Seconds(), ttl.Seconds()
	}
	return d
}
func (b *scyllaBackend) SlotLag(context.Context) (int64, bool, error) { return 0, false, nil }
func (b *scyllaBackend) CDCLag() (lag, ttl time.Duration, ok bool) {
	if b.cdc == nil {
		return 0, 0, false
	}
	lag, ttl = b.cdc.Lag()
	return lag, ttl, true
}
