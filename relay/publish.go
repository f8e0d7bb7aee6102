package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// The publish path, one message at a time within its aggregate:
//
//	handle     parked aggregate → dead letter; otherwise publish, and a
//	           permanent failure → dead letter
//	publish    rounds until acknowledged, permanent, stuck too long or ctx ends:
//	             waitForBroker → round (Retry's schedule of attempts) →
//	             settle the round → pauseBetweenRounds
//	attempt    waitWhileRefused(fenced(breakered(timed(Publisher.Publish))))
//
// A round of transient failures is never a dead letter: it ends in a wait
// for the broker, so an outage is back-pressure.

// sendFunc is one publish attempt of a message.
type sendFunc func(context.Context, outbox.Message) error

// attemptChain builds the attempt from the publisher outwards; each layer
// is one rule a reader can check on its own.
func (r *run) attemptChain(cur Cursor) sendFunc {
	send := r.timed(r.pub.Publish)
	send = r.breakered(send)
	if f, ok := cur.(Fencer); ok {
		send = r.fenced(f.Fence, send)
	}
	return r.waitWhileRefused(send)
}

// timed bounds an attempt by PublishTimeout.
func (r *run) timed(next sendFunc) sendFunc {
	return func(ctx context.Context, m outbox.Message) error {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		defer cancel()
		return next(ctx, m)
	}
}

// breakered passes the attempt through the breaker, which counts its
// outcome or refuses it with breaker.ErrOpen.
func (r *run) breakered(next sendFunc) sendFunc {
	return func(ctx context.Context, m outbox.Message) error {
		return r.br.Do(func() error { return next(ctx, m) })
	}
}

// waitWhileRefused makes a call the breaker refused without trying not
// count as an attempt: it waits for the breaker (in half-open, others
// hold the probe quota) and asks again, through the fence again.
func (r *run) waitWhileRefused(next sendFunc) sendFunc {
	return func(ctx context.Context, m outbox.Message) error {
		for {
			err := next(ctx, m)
			if !errors.Is(err, breaker.ErrOpen) {
				return err
			}
			if err := r.br.WaitUntilCallable(ctx); err != nil {
				return err
			}
			if err := retry.Wait(ctx, max(r.cfg.Retry.InitialDelay, 10*time.Millisecond)); err != nil {
				return err
			}
		}
	}
}

// fenced refuses the attempt once the cursor says another relay may own
// the source: this run publishes nothing more (not even a retry of the
// message in hand) and ends with the reason.
func (r *run) fenced(fence func() error, next sendFunc) sendFunc {
	return func(ctx context.Context, m outbox.Message) error {
		if err := fence(); err != nil {
			r.stop(fmt.Errorf("relay: %w: %w", errFenced, err))
			// Canceled, so no retry policy tries again.
			return fmt.Errorf("relay: %w: %w (%w)", errFenced, err, context.Canceled)
		}
		return next(ctx, m)
	}
}

// handle publishes m or dead-letters it. It reports whether m is settled.
func (r *run) handle(ctx context.Context, m outbox.Message) bool {
	key := m.Key()
	r.mu.Lock()
	parked := r.parked[key]
	r.mu.Unlock()
	if parked {
		// The store fills ParkedBehind with the aggregate's first failure.
		return r.deadLetter(ctx, outbox.DeadLetter{Message: m, Error: "aggregate parked behind an earlier dead letter"})
	}
	attempts, err := r.publish(ctx, m)
	switch {
	case err == nil:
		return true
	case outbox.IsPermanent(err):
		// Logged where it is stored (the dead-letter worker), once.
		return r.deadLetter(ctx, outbox.DeadLetter{Message: m, Error: err.Error(), FailureCount: attempts})
	default:
		return false // ctx ended
	}
}

// failure is what publish knows about a message that has not yet been
// acknowledged.
type failure struct {
	began    time.Time       // first attempt
	attempts int             // across rounds
	stuck    *StuckAggregate // set from the first failed attempt
}

// publish tries m in rounds until the broker acknowledges it, it fails
// permanently, it has been stuck longer than StuckTimeout, or ctx ends.
func (r *run) publish(ctx context.Context, m outbox.Message) (int, error) {
	f := &failure{began: time.Now()}
	defer func() {
		if f.stuck != nil {
			r.unstuck(m.Key())
		}
	}()
	for {
		if err := r.br.WaitUntilCallable(ctx); err != nil {
			return f.attempts, err
		}
		err := r.round(ctx, m, f)
		if err == nil {
			r.acknowledged(m, f.attempts)
			return f.attempts, nil
		}
		if outbox.IsPermanent(err) || ctx.Err() != nil || errors.Is(err, errFenced) {
			return f.attempts, err
		}
		r.roundFailed(m, f, err)
		if r.stuckTooLong(f.stuck) {
			return f.attempts, outbox.Permanent(fmt.Errorf("%w: failing for %s (%d attempts) while other aggregates were published; last error: %w",
				ErrStuck, time.Since(f.stuck.Since).Round(time.Second), f.attempts, err))
		}
		if err := r.pauseBetweenRounds(ctx); err != nil {
			return f.attempts, err
		}
	}
}

// round is Retry's schedule of attempts of m.
func (r *run) round(ctx context.Context, m outbox.Message, f *failure) error {
	before := f.attempts
	n, err := r.cfg.Retry.Do(ctx, func(ctx context.Context) error { return r.send(ctx, m) }, func(a retry.Attempt) {
		r.stats.retried.Add(1)
		hooks(r.cfg.Hooks).each(func(h Hook) {
			if rh, ok := h.(RetryHook); ok {
				rh.OnRetry(m, a)
			}
		})
		r.failing(m, f, before+a.N, a.Err)
	})
	f.attempts = before + n
	return err
}

// pauseBetweenRounds waits a full backoff when the breaker is closed: other
// aggregates keep it closed while this one fails, so WaitUntilCallable
// alone would not slow the next round down.
func (r *run) pauseBetweenRounds(ctx context.Context) error {
	if r.br.State() != breaker.Closed {
		return nil
	}
	return retry.Wait(ctx, r.cfg.Retry.MaxDelay)
}

func (r *run) acknowledged(m outbox.Message, attempts int) {
	r.lastAck.Store(time.Now().UnixNano())
	r.stats.published.Add(1)
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if ph, ok := h.(PublishHook); ok {
			ph.OnPublish(m, attempts, time.Since(m.Timestamp))
		}
	})
}

// roundFailed records a round of transient failures.
func (r *run) roundFailed(m outbox.Message, f *failure, err error) {
	r.stats.failed.Add(1)
	r.log.Warn("publish round failed; waiting for the broker", "event_id", m.ID, "attempts", f.attempts, "err", err)
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if fh, ok := h.(FailHook); ok {
			fh.OnPublishFailed(m, f.attempts, err)
		}
	})
	r.failing(m, f, f.attempts, err)
}

// failing records a failed attempt of m: its aggregate shows as stuck
// (Stats, StuckHook), since its first attempt, until it settles.
func (r *run) failing(m outbox.Message, f *failure, attempts int, err error) {
	key := m.Key()
	r.stuckMu.Lock()
	first := f.stuck == nil
	if first {
		f.stuck = &StuckAggregate{Aggregate: key, EventID: m.ID.String(), Since: f.began}
		r.stuck[key] = f.stuck
	}
	f.stuck.Attempts, f.stuck.Error, f.stuck.LastFailure = attempts, err.Error(), time.Now()
	r.stuckMu.Unlock()
	if first {
		hooks(r.cfg.Hooks).each(func(h Hook) {
			if sh, ok := h.(StuckHook); ok {
				sh.OnStuck(key)
			}
		})
	}
}

// stuckTooLong reports whether a failing message has waited past
// StuckTimeout while the broker acknowledged other messages: it is stuck
// on its own (a missing topic, a partition below its minimum in-sync
// replicas), and holding it longer would hold the checkpoint, and with
// it the database's log, without end. During an outage nothing is
// acknowledged, so nothing is parked.
func (r *run) stuckTooLong(s *StuckAggregate) bool {
	if r.cfg.StuckTimeout < 0 || s == nil {
		return false
	}
	r.stuckMu.Lock()
	since := s.Since
	r.stuckMu.Unlock()
	return time.Since(since) >= r.cfg.StuckTimeout && r.lastAck.Load() >= since.UnixNano()
}
