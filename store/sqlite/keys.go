package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// KeyCleanerConfig tunes the idempotency-key cleaner. Its zero value works.
type KeyCleanerConfig struct {
	// Retention is how long a key replays its order (default 24 h, as
	// Stripe's). A key is deleted at the first round after it expires, so
	// it may replay a little longer, never shorter.
	Retention time.Duration
	// Interval between rounds (default 1 min).
	Interval time.Duration
	// BatchSize bounds each DELETE (default 1,000 rows), so writers wait
	// for the database's one write lock for one short statement at most.
	BatchSize int
	// Now is the clock keys are aged against (default time.Now).
	Now func() time.Time
	// OnBatch, when set, hears how many keys each DELETE removed: a hook
	// for metrics.
	OnBatch func(deleted int64)
	Logger  *slog.Logger
}

func (c *KeyCleanerConfig) setDefaults() {
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.OnBatch == nil {
		c.OnBatch = func(int64) {}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate rejects negative knobs; zero means the default.
func (c KeyCleanerConfig) Validate() error {
	switch {
	case c.Retention < 0:
		return fmt.Errorf("sqlite: key cleaner Retention must not be negative, got %s", c.Retention)
	case c.Interval < 0:
		return fmt.Errorf("sqlite: key cleaner Interval must not be negative, got %s", c.Interval)
	case c.BatchSize < 0:
		return fmt.Errorf("sqlite: key cleaner BatchSize must not be negative, got %d", c.BatchSize)
	}
	return nil
}

// KeyCleaner deletes idempotency keys past their retention, in bounded
// batches. The orders the keys point to are never touched: a retry after
// the window is a new request and creates a new order.
type KeyCleaner struct {
	s   *Store
	cfg KeyCleanerConfig
}

// NewKeyCleaner validates cfg and builds the cleaner.
func (s *Store) NewKeyCleaner(cfg KeyCleanerConfig) (*KeyCleaner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &KeyCleaner{s: s, cfg: cfg}, nil
}

// Serve runs a round at once and then every Interval until ctx ends, and
// returns nil then. The first round does not wait for a tick so that a
// process restarted more often than Interval still cleans. A failed
// round is logged and the next one tries again.
func (c *KeyCleaner) Serve(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if n, err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Error("idempotency key cleanup", "err", err)
		} else if n > 0 {
			c.cfg.Logger.Info("idempotency key cleanup", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// The subquery walks order_idempotency_keys_created_at from the oldest
// key; each statement is its own short write transaction.
const deleteExpiredKeysSQL = `DELETE FROM order_idempotency_keys WHERE key IN (
	SELECT key FROM order_idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)`

// RunOnce deletes the keys expired now, one batch per statement until a
// batch comes back short, and reports how many it deleted.
func (c *KeyCleaner) RunOnce(ctx context.Context) (int64, error) {
	cutoff := c.cfg.Now().Add(-c.cfg.Retention).UnixMicro()
	var total int64
	for {
		res, err := c.s.exec(ctx, deleteExpiredKeysSQL, cutoff, c.cfg.BatchSize)
		if err != nil {
			return total, fmt.Errorf("sqlite: delete idempotency keys created before %s: %w", time.UnixMicro(cutoff).UTC().Format(time.RFC3339), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("sqlite: delete idempotency keys: %w", err)
		}
		total += n
		c.cfg.OnBatch(n)
		if n < int64(c.cfg.BatchSize) || ctx.Err() != nil {
			return total, nil
		}
	}
}
