// Package breaker guards the broker with a circuit breaker (gobreaker v2)
// and adds what the relay needs on top: observable state, transition
// hooks, and a way to wait while it is open instead of spinning.
//
// Only transient failures count against the broker. A permanent failure
// (a message too large, say) is the broker answering correctly about one
// message, so it counts as a success for the breaker.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/outbox-dev/outbox/outbox"
)

// State is the breaker's state.
type State = gobreaker.State

const (
	Closed   = gobreaker.StateClosed
	HalfOpen = gobreaker.StateHalfOpen
	Open     = gobreaker.StateOpen
)

// ErrOpen is returned (wrapped) for calls refused without trying: the
// breaker is open, or half-open with its probe quota in use. It is
// transient: the caller should wait and try again.
var ErrOpen = errors.New("circuit breaker open")

// Config sets the thresholds. Its zero value is the design's: 5 consecutive
// failures open it, 30 s to half-open, 3 successes close it.
type Config struct {
	FailureThreshold uint32
	OpenTimeout      time.Duration
	HalfOpenSuccess  uint32
	// OnStateChange hears every transition.
	OnStateChange func(from, to State)
}

func (c *Config) setDefaults() {
	if c.FailureThreshold == 0 {
		c.FailureThreshold = 5
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = 30 * time.Second
	}
	if c.HalfOpenSuccess == 0 {
		c.HalfOpenSuccess = 3
	}
}

// Validate names the first field that is out of range.
func (c Config) Validate() error {
	if c.OpenTimeout < 0 {
		return fmt.Errorf("breaker: OpenTimeout must not be negative, got %s", c.OpenTimeout)
	}
	return nil
}

// Breaker is safe for concurrent use.
type Breaker struct {
	cfg Config
	// cb is swapped whole by Trip and Reset: gobreaker has no way to set
	// its state, and a fresh instance is the state asked for.
	cb     atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	swapMu sync.Mutex // serialises Trip and Reset

	// mu guards what follows. It is never held while calling into a
	// gobreaker instance, whose transition callbacks take it.
	mu       sync.Mutex
	last     State
	openedAt time.Time
	changed  chan struct{} // closed and replaced on every transition
}

// New builds a breaker from cfg.
func New(cfg Config) (*Breaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	b := &Breaker{cfg: cfg, last: Closed, changed: make(chan struct{})}
	b.cb.Store(b.newCircuit())
	return b, nil
}

func (b *Breaker) newCircuit() *gobreaker.CircuitBreaker[struct{}] {
	var self *gobreaker.CircuitBreaker[struct{}]
	self = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "broker",
		MaxRequests: b.cfg.HalfOpenSuccess,
		Timeout:     b.cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= b.cfg.FailureThreshold },
		IsSuccessful: func(err error) bool {
			return err == nil || outbox.IsPermanent(err)
		},
		// The caller giving up says nothing about the broker.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if b.cb.Load() == self { // not a replaced instance finishing a call
				b.transition(to)
			}
		},
	})
	return self
}

// transition records and reports a move to state to, once.
func (b *Breaker) transition(to State) {
	b.mu.Lock()
	from := b.last
	if from == to {
		b.mu.Unlock()
		return
	}
	b.last = to
	if to == Open {
		b.openedAt = time.Now()
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	if b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(from, to)
	}
}

// Trip opens the breaker now, as if the failure threshold had been
// reached: for a failure seen outside any call, such as every broker
// refusing connections. An open breaker stays as it is.
func (b *Breaker) Trip() {
	b.swapMu.Lock()
	defer b.swapMu.Unlock()
	if b.State() == Open {
		return
	}
	c := b.newCircuit()
	for range b.cfg.FailureThreshold {
		c.Execute(func() (struct{}, error) { return struct{}{}, errTripped })
	}
	b.cb.Store(c)
	b.transition(Open)
}

// Reset closes the breaker now: for evidence, seen outside any call, that
// the broker answers again. Waiting out the open timeout would only delay
// delivery; if publishing still fails, the threshold opens it again.
func (b *Breaker) Reset() {
	b.swapMu.Lock()
	defer b.swapMu.Unlock()
	if b.State() == Closed {
		return
	}
	b.cb.Store(b.newCircuit())
	b.transition(Closed)
}

var errTripped = errors.New("breaker tripped")

// State reports the current state, moving open to half-open once the
// timeout has passed.
func (b *Breaker) State() State { return b.cb.Load().State() }

// Do runs fn unless the breaker refuses it.
func (b *Breaker) Do(fn func() error) error {
	_, err := b.cb.Load().Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w: %w", ErrOpen, err)
	}
	return err
}

// WaitUntilCallable blocks while the breaker is open: until the open
// timeout has passed, or ctx ends. Half-open returns at once: the callers
// are the probes, and those refused beyond the quota are paced by their
// retry delays.
func (b *Breaker) WaitUntilCallable(ctx context.Context) error {
	for b.State() == Open {
		b.mu.Lock()
		changed, openedAt := b.changed, b.openedAt
		b.mu.Unlock()
		// gobreaker half-opens strictly after the expiry.
		t := time.NewTimer(time.Until(openedAt.Add(b.cfg.OpenTimeout)) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
	return ctx.Err()
}
