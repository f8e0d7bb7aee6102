// Package poll turns a store that can fetch outbox rows after a position
// into a relay.Source.
//
// The store decides what "after" means and must make it safe: a row may
// never become visible behind a position already returned (SQLite's single
// writer guarantees that; PostgreSQL needs a visibility guard).
package poll

import (
	"context"
	"fmt"
	"time"

	"github.com/outbox-dev/outbox/relay"
)

// Fetcher is what a store offers for polling.
type Fetcher interface {
	// Fetch returns up to max records after pos ("" means from the start),
	// in commit order.
	Fetch(ctx context.Context, after relay.Position, max int) ([]relay.Record, error)
	LoadCheckpoint(ctx context.Context, name string) (relay.Position, error)
	SaveCheckpoint(ctx context.Context, name string, pos relay.Position) error
}

// Config holds the polling knobs. Its zero value works.
type Config struct {
	// Name keys the checkpoint, so several relays can share a store.
	Name string
	// Interval is the wait after an empty fetch (default 100 ms).
	Interval time.Duration
	// Wake, when not nil, ends the wait early: stores signal it after an
	// in-process commit so a poll follows at once.
	Wake <-chan struct{}
}

// NewSource builds a polling source over f.
func NewSource(f Fetcher, cfg Config) (relay.Source, error) {
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("poll: Interval must not be negative, got %s", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	return &source{f: f, cfg: cfg}, nil
}

type source struct {
	f   Fetcher
	cfg Config
}

func (s *source) Open(ctx context.Context) (relay.Cursor, error) {
	pos, err := s.f.LoadCheckpoint(ctx, s.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("poll: load checkpoint %q: %w", s.cfg.Name, err)
	}
	return &cursor{source: s, pos: pos}, nil
}

type cursor struct {
	*source
	pos relay.Position
}

func (c *cursor) Next(ctx context.Context, max int) ([]relay.Record, error) {
	recs, err := c.f.Fetch(ctx, c.pos, max)
	if err != nil {
		return nil, err
	}
	if len(recs) > 0 {
		c.pos = recs[len(recs)-1].Position
		return recs, nil
	}
	t := time.NewTimer(c.cfg.Interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-c.cfg.Wake:
	}
	return nil, nil
}

func (c *cursor) Commit(ctx context.Context, pos relay.Position) error {
	return c.f.SaveCheckpoint(ctx, c.cfg.Name, pos)
}

func (c *cursor) Close() error { return nil }
