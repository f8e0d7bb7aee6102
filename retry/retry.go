// Package retry is the relay's retry policy: exponential backoff with a cap
// and optional jitter, stopping early on permanent errors.
//
// It waits with time.Timer, never time.Sleep, so tests drive it with
// testing/synctest and the caller's context ends any wait at once.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/outbox-dev/outbox/outbox"
)

// Policy is the retry schedule. Its zero value means Default(); any other
// value must be valid as a whole.
type Policy struct {
	// MaxAttempts counts every attempt, the first included.
	MaxAttempts int
	// InitialDelay is the wait before the second attempt.
	InitialDelay time.Duration
	// Multiplier grows each wait from the previous one.
	Multiplier float64
	// MaxDelay caps every wait.
	MaxDelay time.Duration
	// Jitter spreads each wait uniformly over ±Jitter of itself (0 to 1), so
	// many relays recovering together do not retry in lockstep.
	Jitter float64
}

// Default is the design's schedule: attempts at 0, 100, 300, 700 and 1200 ms.
func Default() Policy {
	return Policy{MaxAttempts: 5, InitialDelay: 100 * time.Millisecond, Multiplier: 2, MaxDelay: 500 * time.Millisecond}
}

// WithDefaults returns Default() for the zero Policy and p otherwise.
func (p Policy) WithDefaults() Policy {
	if p == (Policy{}) {
		return Default()
	}
	return p
}

// ErrInvalidPolicy is wrapped by every validation error.
var ErrInvalidPolicy = errors.New("invalid retry policy")

// Validate names the first field that is out of range.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts <= 0:
		return fmt.Errorf("%w: MaxAttempts must be at least 1, got %d", ErrInvalidPolicy, p.MaxAttempts)
	case p.InitialDelay < 0:
		return fmt.Errorf("%w: InitialDelay must not be negative, got %s", ErrInvalidPolicy, p.InitialDelay)
	case p.MaxDelay < 0:
		return fmt.Errorf("%w: MaxDelay must not be negative, got %s", ErrInvalidPolicy, p.MaxDelay)
	case p.MaxDelay < p.InitialDelay:
		return fmt.Errorf("%w: MaxDelay (%s) must not be below InitialDelay (%s)", ErrInvalidPolicy, p.MaxDelay, p.InitialDelay)
	case p.Multiplier < 1:
		return fmt.Errorf("%w: Multiplier must be at least 1, got %g", ErrInvalidPolicy, p.Multiplier)
	case p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("%w: Jitter must be between 0 and 1, got %g", ErrInvalidPolicy, p.Jitter)
	}
	return nil
}

// Delay is the wait before attempt n (n ≥ 2), without jitter.
func (p Policy) Delay(n int) time.Duration {
	if n < 2 {
		return 0
	}
	d := float64(p.InitialDelay)
	for i := 2; i < n && d < float64(p.MaxDelay); i++ {
		d *= p.Multiplier
	}
	return min(time.Duration(d), p.MaxDelay)
}

func (p Policy) jittered(n int) time.Duration {
	d := p.Delay(n)
	if p.Jitter == 0 || d == 0 {
		return d
	}
	spread := float64(d) * p.Jitter
	return time.Duration(float64(d) - spread + rand.Float64()*2*spread)
}

// Attempt describes a failed attempt that will be retried.
type Attempt struct {
	N     int           // the attempt that failed, from 1
	Err   error         // why it failed
	Delay time.Duration // the wait before the next one
}

// Do runs fn until it succeeds, fails permanently, the attempts run out or
// ctx ends. onRetry, when not nil, hears each failure that will be retried.
// It returns the number of attempts made and the last error.
func (p Policy) Do(ctx context.Context, fn func(context.Context) error, onRetry func(Attempt)) (int, error) {
	var err error
	for n := 1; ; n++ {
		if err = fn(ctx); err == nil {
			return n, nil
		}
		if !outbox.IsRetryable(err) || n >= p.MaxAttempts || ctx.Err() != nil {
			return n, err
		}
		a := Attempt{N: n, Err: err, Delay: p.jittered(n + 1)}
		if onRetry != nil {
			onRetry(a)
		}
		if werr := Wait(ctx, a.Delay); werr != nil {
			return n, errors.Join(err, werr)
		}
	}
}

// Wait blocks for d or until ctx ends, whichever comes first.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
