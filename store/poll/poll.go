// Package poll turns a store that can fetch outbox rows after a position
// into a outbox.Source.
//
// The store decides what "after" means and must make it safe: a row may
// never become visible behind a position already returned (SQLite's single
// writer guarantees that; PostgreSQL needs a visibility guard).
package poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outbox-dev/outbox/outbox"
)

// Fetcher is what a store offers for polling.
type Fetcher interface {
	// Fetch returns up to max records after pos ("" means from the start),
	// in commit order.
	Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error)
	LoadCheckpoint(ctx context.Context, name string) (outbox.Position, error)
	SaveCheckpoint(ctx context.Context, name string, pos outbox.Position) error
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
	// Lock, when not nil, lets one relay at a time read the source: a
	// second relay on the same store waits as a standby, and takes over
	// when the active one stops or dies (see Lock). Without it, two
	// relays on one store would both publish everything.
	Lock Lock
	// LockRetry is how often a standby tries to take the lock (default
	// 500 ms): the takeover time after the active relay dies.
	LockRetry time.Duration
	Logger    *slog.Logger
}

// Lock is a mutual exclusion between relays on one store, released when
// its holder stops or its process dies (a file lock on SQLite, a session
// advisory lock on PostgreSQL).
type Lock interface {
	// TryLock takes the lock if it is free and reports whether it did.
	// Once held, lost is closed if the lock is lost (its session ended).
	TryLock(ctx context.Context) (lost <-chan struct{}, ok bool, err error)
	// Unlock gives the lock up; it is safe to call more than once.
	Unlock() error
}

// ErrLockLost is returned by a cursor whose relay lost its lock: the
// relay must stop reading, as another may have taken over. It is
// transient: restarted, the relay waits as a standby.
var ErrLockLost = errors.New("poll: relay lock lost; another relay may be active")

// NewSource builds a polling source over f.
func NewSource(f Fetcher, cfg Config) (outbox.Source, error) {
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("poll: Interval must not be negative, got %s", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.LockRetry < 0 {
		return nil, fmt.Errorf("poll: LockRetry must not be negative, got %s", cfg.LockRetry)
	}
	if cfg.LockRetry == 0 {
		cfg.LockRetry = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &source{f: f, cfg: cfg}, nil
}

type source struct {
	f   Fetcher
	cfg Config
}

// Open waits, as a standby, until it holds the lock (when there is one),
// then starts after the last checkpoint.
func (s *source) Open(ctx context.Context) (outbox.Cursor, error) {
	lost, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	pos, err := s.f.LoadCheckpoint(ctx, s.cfg.Name)
	if err != nil {
		s.unlock()
		return nil, fmt.Errorf("poll: load checkpoint %q: %w", s.cfg.Name, err)
	}
	return &cursor{source: s, pos: pos, lost: lost}, nil
}

// lock takes the relay lock, saying once that this relay is a standby
// while another holds it.
func (s *source) lock(ctx context.Context) (<-chan struct{}, error) {
	if s.cfg.Lock == nil {
		return nil, nil
	}
	for standby := false; ; {
		lost, ok, err := s.cfg.Lock.TryLock(ctx)
		if err != nil {
			return nil, fmt.Errorf("poll: take the relay lock of %q: %w", s.cfg.Name, err)
		}
		if ok {
			if standby {
				s.cfg.Logger.Warn("took over: this relay is now the active one", "source", s.cfg.Name)
			}
			return lost, nil
		}
		if !standby {
			standby = true
			s.cfg.Logger.Warn("standby: another relay is reading this outbox; this one takes over when it stops",
				"source", s.cfg.Name, "retry", s.cfg.LockRetry)
		}
		t := time.NewTimer(s.cfg.LockRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (s *source) unlock() {
	if s.cfg.Lock != nil {
		s.cfg.Lock.Unlock()
	}
}

type cursor struct {
	*source
	pos  outbox.Position
	lost <-chan struct{}
}

func (c *cursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	select {
	case <-c.lost:
		return nil, ErrLockLost
	default:
	}
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

func (c *cursor) Commit(ctx context.Context, pos outbox.Position) error {
	select {
	case <-c.lost:
		return ErrLockLost // another relay may own the checkpoint now
	default:
	}
	return c.f.SaveCheckpoint(ctx, c.cfg.Name, pos)
}

func (c *cursor) Close() error {
	c.unlock()
	return nil
}
