package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Horizon returns a transaction id below which every outbox row has been
// acknowledged by the broker; 0 means nothing is known to be safe.
type Horizon func(ctx context.Context) (uint64, error)

// CleanupConfig tunes the cleaner. Its zero value works.
type CleanupConfig struct {
	// Retention keeps acknowledged rows this long (default 24 h).
	Retention time.Duration
	// Interval between rounds (default 1 min).
	Interval time.Duration
	// BatchSize bounds each DELETE (default 1,000 rows).
	BatchSize int
	Logger    *slog.Logger
}

// Cleaner deletes acknowledged outbox rows past their retention, in
// bounded batches that skip rows locked by others.
type Cleaner struct {
	s       *Store
	horizon Horizon
	cfg     CleanupConfig
}

// NewCleaner builds a cleaner bounded by horizon.
func (s *Store) NewCleaner(horizon Horizon, cfg CleanupConfig) *Cleaner {
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cleaner{s: s, horizon: horizon, cfg: cfg}
}

// Serve runs a round every Interval until ctx ends; a failed round is
// logged and the next one tries again.
func (c *Cleaner) Serve(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Error("outbox cleanup", "err", err)
		} else if n > 0 {
			c.cfg.Logger.Info("outbox cleanup", "deleted", n)
		}
	}
}

// RunOnce deletes what is safe to delete now and reports how many rows.
func (c *Cleaner) RunOnce(ctx context.Context) (int64, error) {
	h, err := c.horizon(ctx)
	if err != nil || h == 0 {
		return 0, err
	}
	var total int64
	for {
		tag, err := c.s.pool.Exec(ctx, `DELETE FROM outbox WHERE position IN (
			SELECT position FROM outbox WHERE txid < $1::text::xid8 AND timestamp < now() - make_interval(secs => $2)
			ORDER BY position LIMIT $3 FOR UPDATE SKIP LOCKED)`,
			strconv.FormatUint(h, 10), c.cfg.Retention.Seconds(), c.cfg.BatchSize)
		if err != nil {
			return total, fmt.Errorf("postgres: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(c.cfg.BatchSize) || ctx.Err() != nil {
			return total, nil
		}
	}
}

// PollCleanupHorizon bounds cleanup by the polling relay's checkpoint.
func (s *Store) PollCleanupHorizon(name string) Horizon {
	return func(ctx context.Context) (uint64, error) { return s.PollHorizon(ctx, name) }
}

// CleanupHorizon bounds cleanup for the CDC relay. It takes a mark (the
// oldest running transaction id and the current WAL position); once the
// slot has confirmed past that WAL position, every transaction below the
// mark's id committed before it and was therefore acknowledged.
func (c *CDCSource) CleanupHorizon() Horizon {
	var mu sync.Mutex
	var markXmin uint64
	var markLSN pglogrepl.LSN
	var safe uint64
	return func(ctx context.Context) (uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		var confirmed *string
		if err := c.s.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&confirmed); err != nil {
			return safe, fmt.Errorf("postgres: cleanup horizon: %w", err)
		}
		if confirmed != nil && markLSN != 0 {
			if lsn, err := pglogrepl.ParseLSN(*confirmed); err == nil && lsn >= markLSN {
				safe = markXmin
				markLSN = 0
			}
		}
		if markLSN == 0 {
			var xmin, lsn string
			if err := c.s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text, pg_current_wal_lsn()::text`).Scan(&xmin, &lsn); err != nil {
				return safe, fmt.Errorf("postgres: cleanup mark: %w", err)
			}
			markXmin, _ = strconv.ParseUint(xmin, 10, 64)
			markLSN, _ = pglogrepl.ParseLSN(lsn)
		}
		return safe, nil
	}
}
