package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// The publish path, a run of an aggregate's consecutive messages at a
// time (one message when the publisher cannot take runs):
//
//	handle     parked aggregate → dead letter; otherwise publish, and a
//	           permanent failure of the run's first message → dead letter
//	publish    rounds until some of the run is acknowledged, its first
//	           message fails permanently, it is stuck too long or ctx ends:
//	             waitForBroker → round (Retry's schedule of attempts) →
//	             settle the round → pauseBetweenRounds
//	           a run that fails permanently is tried again as its first
//	           message alone, so only the failing message is dead-lettered
//	attempt    waitWhileRefused(fenced(breakered(timed(Publisher))))
//
// A round of transient failures is never a dead letter: it ends in a wait
// for the broker, so an outage is back-pressure. The publisher
// acknowledges a prefix of the run, and no message after the first
// unacknowledged one is ever in the log ahead of it
// (outbox.BatchPublisher), so a failed message is never overtaken.

// sendFunc is one publish attempt of runs of different aggregates: for
// each run, how many of its messages, from the first, the broker
// acknowledged, and why the next one was not (results[i] for runs[i]).
type sendFunc func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult)

// attemptChain builds the attempt from the publisher outwards; each layer
// is one rule a reader can check on its own.
func (r *run) attemptChain(cur Cursor) sendFunc {
	send := r.timed(r.publisher())
	send = r.breakered(send)
	if f, ok := cur.(Fencer); ok {
		send = r.fenced(f.Fence, send)
	}
	return r.waitWhileRefused(send)
}

// sendRun is one attempt of one run.
func (r *run) sendRun(ctx context.Context, msgs []outbox.Message) (int, error) {
	var res [1]outbox.RunResult
	r.send(ctx, [][]outbox.Message{msgs}, res[:])
	return res[0].Acked, res[0].Err
}

// publisher sends runs through the RunsPublisher, else through the
// BatchPublisher or one message at a time (only groups of one lane are
// formed then: see groupSize).
func (r *run) publisher() sendFunc {
	if rp, ok := r.pub.(outbox.RunsPublisher); ok {
		return rp.PublishRuns
	}
	one := func(ctx context.Context, msgs []outbox.Message) (int, error) {
		if err := r.pub.Publish(ctx, msgs[0]); err != nil {
			return 0, err
		}
		return 1, nil
	}
	if bp, ok := r.pub.(outbox.BatchPublisher); ok && r.cfg.MaxRun > 1 {
		one = bp.PublishBatch
	}
	return func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
		for i, msgs := range runs {
			n, err := one(ctx, msgs)
			results[i] = outbox.RunResult{Acked: n, Err: err}
		}
	}
}

// timed bounds an attempt by PublishTimeout: each attempt has at least
// PublishTimeout and at most a sixteenth more. Attempts share a deadline
// context, made anew at most every PublishTimeout/16, instead of each
// arming and stopping a timer of its own (a context.WithTimeout per
// attempt was about a tenth of the relay's CPU per event in the drain's
// profile; BenchmarkTimedAttempt).
func (r *run) timed(next sendFunc) sendFunc {
	d := &sharedDeadline{timeout: r.cfg.PublishTimeout, slack: r.cfg.PublishTimeout / 16}
	return func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
		next(d.context(ctx), runs, results)
	}
}

// sharedDeadline hands out a context that ends no sooner than timeout from
// now and no later than timeout+slack from now, a child of the caller's.
type sharedDeadline struct {
	timeout, slack time.Duration
	cur            atomic.Pointer[deadlineCtx]
	mu             sync.Mutex
	cancels        []deadlineCancel // of the contexts made, until their deadline passed
}

type deadlineCtx struct {
	ctx      context.Context
	parent   context.Context
	deadline time.Time
}

type deadlineCancel struct {
	cancel   context.CancelFunc
	deadline time.Time
}

func (s *sharedDeadline) context(parent context.Context) context.Context {
	now := time.Now()
	if c := s.cur.Load(); c != nil && c.parent == parent && !now.Add(s.timeout).After(c.deadline) {
		return c.ctx
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && c.parent == parent && !now.Add(s.timeout).After(c.deadline) {
		return c.ctx
	}
	deadline := now.Add(s.timeout + s.slack)
	ctx, cancel := context.WithDeadline(parent, deadline)
	// Release the contexts whose deadline passed (they ended already).
	kept := s.cancels[:0]
	for _, c := range s.cancels {
		if now.After(c.deadline) {
			c.cancel()
		} else {
			kept = append(kept, c)
		}
	}
	s.cancels = append(kept, deadlineCancel{cancel, deadline})
	s.cur.Store(&deadlineCtx{ctx: ctx, parent: parent, deadline: deadline})
	return ctx
}

// breakered passes the attempt through the breaker, which counts its
// outcome or refuses it with breaker.ErrOpen. Part of a run acknowledged
// is a success: the broker answers.
func (r *run) breakered(next sendFunc) sendFunc {
	return func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
		called := false
		err := r.br.Do(func() error {
			called = true
			next(ctx, runs, results)
			return firstFailure(results)
		})
		if !called {
			failAll(results, err)
		}
	}
}

// firstFailure is nil when some run was acknowledged in part, else the
// first transient error (the breaker counts a permanent one, an answer
// from the broker, as a success), else the first error. A run still in
// flight has no outcome yet.
func firstFailure(results []outbox.RunResult) error {
	for _, res := range results {
		if res.Acked > 0 {
			return nil
		}
	}
	var first error
	for _, res := range results {
		if res.Err == nil || errors.Is(res.Err, outbox.ErrInFlight) {
			continue
		}
		if !outbox.IsPermanent(res.Err) {
			return res.Err
		}
		if first == nil {
			first = res.Err
		}
	}
	return first
}

func failAll(results []outbox.RunResult, err error) {
	for i := range results {
		results[i] = outbox.RunResult{Err: err}
	}
}

// waitWhileRefused makes a call the breaker refused without trying not
// count as an attempt: it waits for the breaker (in half-open, others
// hold the probe quota) and asks again, through the fence again.
func (r *run) waitWhileRefused(next sendFunc) sendFunc {
	return func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
		for {
			next(ctx, runs, results)
			if !errors.Is(results[0].Err, breaker.ErrOpen) || results[0].Acked > 0 {
				return
			}
			if err := r.br.WaitUntilCallable(ctx); err != nil {
				failAll(results, err)
				return
			}
			if err := retry.Wait(ctx, max(r.cfg.Retry.InitialDelay, 10*time.Millisecond)); err != nil {
				failAll(results, err)
				return
			}
		}
	}
}

// fenced refuses the attempt once the cursor says another relay may own
// the source: this run publishes nothing more (not even a retry of the
// message in hand) and ends with the reason.
func (r *run) fenced(fence func() error, next sendFunc) sendFunc {
	return func(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
		if err := fence(); err != nil {
			r.stop(fmt.Errorf("relay: %w: %w", errFenced, err))
			// Canceled, so no retry policy tries again.
			failAll(results, fmt.Errorf("relay: %w: %w (%w)", errFenced, err, context.Canceled))
			return
		}
		next(ctx, runs, results)
	}
}

// handle publishes msgs, consecutive messages of one aggregate, or
// dead-letters the first. It reports how many, from the first, are
// settled: at least one, or none when ctx ended. The first announced of
// them were announced to the PublishStartHooks already. tried, when not
// nil, is the failed first attempt of msgs[0], made in a group.
func (r *run) handle(ctx context.Context, msgs []outbox.Message, announced int, tried *groupAttempt) int {
	key := msgs[0].Key()
	r.mu.Lock()
	parked := r.parked[key]
	r.mu.Unlock()
	if parked {
		// The store fills ParkedBehind with the aggregate's first failure.
		if r.deadLetter(ctx, outbox.DeadLetter{Message: msgs[0], Error: "aggregate parked behind an earlier dead letter"}) {
			return 1
		}
		return 0
	}
	acked, attempts, err := r.publish(ctx, msgs, announced, tried)
	switch {
	case acked > 0:
		return acked
	case outbox.IsPermanent(err):
		// Logged where it is stored (the dead-letter worker), once.
		if r.deadLetter(ctx, outbox.DeadLetter{Message: msgs[0], Error: err.Error(), FailureCount: attempts}) {
			return 1
		}
		return 0
	default:
		return 0 // ctx ended
	}
}

// failure is what publish knows about a run's first message while it is
// not acknowledged.
type failure struct {
	began    time.Time       // first attempt
	attempts int             // across rounds
	stuck    *StuckAggregate // set from the first failed attempt
}

// publish tries msgs in rounds until some of them are acknowledged, the
// first fails permanently on its own, it has been stuck longer than
// StuckTimeout, or ctx ends. It returns how many were acknowledged. It
// announces the messages after the first announced to the
// PublishStartHooks. tried, when not nil, is the first attempt of its
// first round, made already.
func (r *run) publish(ctx context.Context, msgs []outbox.Message, announced int, tried *groupAttempt) (int, int, error) {
	if announced < len(msgs) {
		r.publishStart(msgs[announced:])
	}
	f := &failure{began: time.Now()}
	if tried != nil {
		f.began = tried.at
		if outbox.IsPermanent(tried.err) {
			msgs = msgs[:1] // the attempt was of the first alone
		}
	}
	defer func() {
		if f.stuck != nil {
			r.unstuck(msgs[0].Key())
		}
	}()
	for {
		if err := r.br.WaitUntilCallable(ctx); err != nil {
			return 0, f.attempts, err
		}
		acked, err := r.round(ctx, msgs, f, tried)
		tried = nil
		if acked > 0 {
			for _, m := range msgs[:acked] {
				r.acknowledged(m, f.attempts)
			}
			return acked, f.attempts, nil
		}
		if outbox.IsPermanent(err) && len(msgs) > 1 {
			// Which message of the run failed is not known: find out
			// with the first alone, at once.
			msgs = msgs[:1]
			continue
		}
		if outbox.IsPermanent(err) || ctx.Err() != nil || errors.Is(err, errFenced) {
			return 0, f.attempts, err
		}
		r.roundFailed(msgs[0], f, err)
		if r.stuckTooLong(f.stuck) {
			return 0, f.attempts, outbox.Permanent(fmt.Errorf("%w: failing for %s (%d attempts) while other aggregates were published; last error: %w",
				ErrStuck, time.Since(f.stuck.Since).Round(time.Second), f.attempts, err))
		}
		if err := r.pauseBetweenRounds(ctx); err != nil {
			return 0, f.attempts, err
		}
	}
}

func (r *run) publishStart(msgs []outbox.Message) {
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if sh, ok := h.(PublishStartHook); ok {
			sh.OnPublishStart(msgs)
		}
	})
}

// round is Retry's schedule of attempts of msgs; it ends at the first
// attempt that has some of them acknowledged, and returns how many. When
// tried is not nil, the round's first attempt is the one made in a group.
func (r *run) round(ctx context.Context, msgs []outbox.Message, f *failure, tried *groupAttempt) (int, error) {
	before := f.attempts
	var acked int
	n, err := r.cfg.Retry.Do(ctx, func(ctx context.Context) error {
		if tried != nil {
			err := tried.err
			tried = nil
			return err
		}
		var err error
		if acked, err = r.sendRun(ctx, msgs); acked > 0 {
			return nil
		}
		return err
	}, func(a retry.Attempt) {
		r.stats.retried.Add(1)
		hooks(r.cfg.Hooks).each(func(h Hook) {
			if rh, ok := h.(RetryHook); ok {
				rh.OnRetry(msgs[0], a)
			}
		})
		r.failing(msgs[0], f, before+a.N, a.Err)
	})
	f.attempts = before + n
	return acked, err
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
