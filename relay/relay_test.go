package relay_test

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
	"github.com/outbox-dev/outbox/store/memstore"
)

// elapse advances a synctest bubble's fake clock; a publisher's fake
// latency, on a relay's goroutine.
func elapse(d time.Duration) { <-time.After(d) }

// pass advances the fake clock from the test's goroutine, and returns once
// every goroutine woken by then blocked again: what the test looks at next
// is all that moment caused, not a relay half-way through it (a timer of
// its own firing at the same moment as the test's).
func pass(d time.Duration) {
	elapse(d)
	synctest.Wait()
}

// settle advances fake time in small steps (pass) until cond holds or
// limit passes.
func settle(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("condition not met within %s of fake time", limit)
		}
		pass(10 * time.Millisecond)
	}
}

func newRelay(t *testing.T, src outbox.Source, pub outbox.Publisher, dlq outbox.DeadLetterStore, cfg relay.Config) *relay.Relay {
	t.Helper()
	r, err := relay.New(src, pub, dlq, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOrderPerAggregateWithParallelAggregates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			// Uneven publish latency: without per-aggregate lanes, later
			// events of an aggregate would overtake earlier ones.
			elapse(time.Duration(m.Sequence%3) * time.Millisecond)
			return nil
		}}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{Workers: 8})
		stop := serve(t, r)
		for i := range 400 {
			w.write("order", fmt.Sprintf("o%d", i%20), map[string]int{"i": i})
		}
		settle(t, time.Minute, func() bool { return len(pub.published()) >= 400 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		rep := checker.Check(w.rec.History(), pub.observed(), deadLetteredIDs(t, s))
		if !rep.OK() || rep.Dup != 0 {
			t.Fatalf("invariants broken: %s", rep)
		}
		if st := r.Stats(); st.Published != 400 || st.DeadLettered != 0 {
			t.Fatalf("stats %+v", st)
		}
		if pos, _ := s.LoadCheckpoint(t.Context(), "default"); pos != "400" {
			t.Fatalf("checkpoint %q after draining 400 events, want 400", pos)
		}
	})
}

func TestTransientFailuresAreBackPressureNotDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{}
		down := errors.New("broker unavailable")
		pub.setFail(func(outbox.Message) error { return down })
		src := memSource(t, s)
		log := &transitionLog{src: src}
		r := newRelay(t, src, pub, s, relay.Config{Hooks: []relay.Hook{log}})
		serve(t, r)
		for i := range 10 {
			w.write("order", fmt.Sprintf("o%d", i%3), i)
		}
		settle(t, 5*time.Second, func() bool { return r.Stats().Breaker == "open" })
		readsAtOpen := src.reads.Load()
		pass(10 * time.Second)
		if n := src.reads.Load() - readsAtOpen; n > 1 {
			t.Fatalf("relay read the source %d times while the breaker was open", n)
		}
		pub.setFail(nil) // the broker comes back
		settle(t, time.Minute, func() bool { return len(pub.published()) == 10 })
		steps := log.all()
		var seq []string
		for _, s := range steps {
			seq = append(seq, s.to)
		}
		if got := strings.Join(seq, ","); !strings.HasPrefix(got, "open,half-open,closed") {
			t.Fatalf("breaker transitions %s, want open,half-open,closed", got)
		}
		if halfOpen := steps[1].at.Sub(steps[0].at); halfOpen < 30*time.Second || halfOpen > 30*time.Second+100*time.Millisecond {
			t.Fatalf("half-open %s after opening, want 30 s", halfOpen)
		}
		if st := r.Stats(); st.DeadLettered != 0 || st.Retried == 0 {
			t.Fatalf("stats %+v: transient failures must be retried and never dead-lettered", st)
		}
		if dls := deadLetteredIDs(t, s); len(dls) != 0 {
			t.Fatalf("%d transient failures dead-lettered", len(dls))
		}
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() {
			t.Fatalf("invariants broken: %s", rep)
		}
	})
}

// poisonFor fails, permanently, the messages of one aggregate from seq on.
func poisonFor(agg string, seq int64) func(outbox.Message) error {
	return func(m outbox.Message) error {
		if m.AggregateID == agg && m.Sequence == seq {
			return outbox.Permanent(errors.New("message too large"))
		}
		return nil
	}
}

func TestPermanentFailureParksOnlyItsAggregateAndReplayRestoresOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: poisonFor("p", 2)}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		var p []outbox.Message
		for i := range 5 {
			p = append(p, w.write("order", "p", i))
			w.write("order", "q", i)
		}
		settle(t, 10*time.Second, func() bool { return len(pub.published()) == 6 && r.Stats().DeadLettered == 4 })
		if r.Stats().Parked != 1 || r.Stats().Breaker != "closed" {
			t.Fatalf("stats %+v: one aggregate parked, breaker untouched", r.Stats())
		}
		parked, _ := s.ParkedMessages(t.Context(), p[0].Key())
		if len(parked) != 4 || parked[0].Message.ID != p[1].ID || !strings.Contains(parked[0].Error, "too large") {
			t.Fatalf("parked entries %+v", parked)
		}
		for i, d := range parked[1:] {
			if d.Message.ID != p[i+2].ID || d.ParkedBehind != p[1].ID.String() {
				t.Fatalf("entry %d parked out of order or not behind the failure: %+v", i+1, d)
			}
		}
		// Dry run: a plan, and nothing changes.
		plan, err := dlq.Request(t.Context(), s, p[0].Key(), outbox.ActionReplay, dlq.RequestOptions{DryRun: true})
		if err != nil || len(plan.Republish) != 4 {
			t.Fatalf("dry run: %+v %v", plan, err)
		}
		if agg, _ := s.ParkedAggregates(t.Context()); agg[0].Pending != "" {
			t.Fatal("dry run recorded a request")
		}
		// The cause is fixed; replay, then keep writing.
		pub.setFail(nil)
		if _, err := dlq.Request(t.Context(), s, p[0].Key(), outbox.ActionReplay, dlq.RequestOptions{Reason: "fixed"}); err != nil {
			t.Fatal(err)
		}
		r.Poke()
		settle(t, 10*time.Second, func() bool { return r.Stats().Parked == 0 })
		w.write("order", "p", 5)
		settle(t, 10*time.Second, func() bool { return len(pub.published()) == 11 })
		rep := checker.Check(w.rec.History(), pub.observed(), deadLetteredIDs(t, s))
		if !rep.OK() || rep.DeadLettered != 0 || rep.Dup != 0 {
			t.Fatalf("after replay: %s", rep)
		}
		got, _ := s.GetDeadLetter(t.Context(), parked[0].ID)
		if got.Status != outbox.StatusReplayed || got.Resolution != "fixed" || got.ResolvedAt == nil {
			t.Fatalf("replayed entry not recorded: %+v", got)
		}
	})
}

func TestSkipDiscardsTheFailureAndReleasesTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: poisonFor("p", 1)}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		for i := range 3 {
			w.write("order", "p", i)
		}
		settle(t, 10*time.Second, func() bool { return r.Stats().DeadLettered == 3 })
		plan, err := dlq.Request(t.Context(), s, outbox.AggregateKey{Type: "order", ID: "p"}, outbox.ActionSkip, dlq.RequestOptions{Reason: "poison"})
		if err != nil || len(plan.Skip) != 1 || len(plan.Republish) != 2 {
			t.Fatalf("skip plan %+v %v", plan, err)
		}
		r.Poke()
		settle(t, 10*time.Second, func() bool { return r.Stats().Parked == 0 })
		dead := deadLetteredIDs(t, s)
		rep := checker.Check(w.rec.History(), pub.observed(), dead)
		if !rep.OK() || len(dead) != 1 || rep.Published != 2 {
			t.Fatalf("after skip: %s", rep)
		}
	})
}

func TestReplayLimitStopsEndlessLoops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: poisonFor("p", 1)}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		m := w.write("order", "p", 0)
		settle(t, 10*time.Second, func() bool { return r.Stats().DeadLettered == 1 })
		for i := range 2 {
			if _, err := dlq.Request(t.Context(), s, m.Key(), outbox.ActionReplay, dlq.RequestOptions{MaxReplays: 2}); err != nil {
				t.Fatalf("replay %d refused: %v", i+1, err)
			}
			r.Poke()
			settle(t, 10*time.Second, func() bool {
				d, _ := s.ParkedMessages(t.Context(), m.Key())
				return len(d) == 1 && d[0].ReplayCount == i+1
			})
		}
		_, err := dlq.Request(t.Context(), s, m.Key(), outbox.ActionReplay, dlq.RequestOptions{MaxReplays: 2})
		if !errors.Is(err, dlq.ErrReplayLimit) {
			t.Fatalf("third replay: %v, want ErrReplayLimit", err)
		}
		if _, err := dlq.Request(t.Context(), s, outbox.AggregateKey{Type: "order", ID: "nope"}, outbox.ActionReplay, dlq.RequestOptions{}); !errors.Is(err, outbox.ErrNotParked) {
			t.Fatalf("replay of an aggregate not parked: %v", err)
		}
	})
}

func TestCheckpointNeverPassesAnUnacknowledgedEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		release := make(chan struct{})
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if m.AggregateID == "slow" {
				<-release
			}
			return nil
		}}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		w.write("order", "a", 0)
		w.write("order", "slow", 0) // position 2
		for i := range 5 {
			w.write("order", "b", i)
		}
		settle(t, 10*time.Second, func() bool { return len(pub.published()) == 6 })
		pass(time.Second)
		if pos, _ := s.LoadCheckpoint(t.Context(), "default"); pos != "1" {
			t.Fatalf("checkpoint %q while position 2 is unacknowledged, want 1", pos)
		}
		close(release)
		settle(t, 10*time.Second, func() bool {
			pos, _ := s.LoadCheckpoint(t.Context(), "default")
			return pos == "7"
		})
	})
}

// crashingSource drops every commit after crash() is called, as a process
// killed before its next checkpoint would.
type crashingSource struct {
	outbox.Source
	crashed chan struct{}
}

func (s *crashingSource) Open(ctx context.Context) (outbox.Cursor, error) {
	c, err := s.Source.Open(ctx)
	return &crashingCursor{Cursor: c, crashed: s.crashed}, err
}

type crashingCursor struct {
	outbox.Cursor
	crashed chan struct{}
}

func (c *crashingCursor) Commit(ctx context.Context, pos outbox.Position) error {
	select {
	case <-c.crashed:
		return errors.New("process gone")
	default:
		return c.Cursor.Commit(ctx, pos)
	}
}

func TestCrashAndRestartFromCheckpointLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: func(outbox.Message) error { elapse(time.Millisecond); return nil }}
		crashed := make(chan struct{})
		first := newRelay(t, &crashingSource{Source: memSource(t, s), crashed: crashed}, pub, s, relay.Config{DrainTimeout: time.Nanosecond})
		stop := serve(t, first)
		for i := range 300 {
			w.write("order", fmt.Sprintf("o%d", i%10), i)
		}
		settle(t, time.Minute, func() bool { return len(pub.published()) >= 100 })
		close(crashed)
		stop()
		before := len(pub.published())
		second := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, second)
		for i := range 50 {
			w.write("order", fmt.Sprintf("o%d", i%10), i)
		}
		settle(t, time.Minute, func() bool {
			rep := checker.Check(w.rec.History(), pub.observed(), nil)
			return rep.Lost == 0
		})
		rep := checker.Check(w.rec.History(), pub.observed(), nil)
		if !rep.OK() {
			t.Fatalf("after crash and restart: %s", rep)
		}
		t.Logf("crashed after %d publishes; %s", before, rep)
	})
}

func TestConfigIsValidatedAtConstruction(t *testing.T) {
	s := memstore.New()
	src := memSource(t, s)
	for _, tc := range []struct {
		name  string
		cfg   relay.Config
		field string
	}{
		{"zero attempts", relay.Config{Retry: retry.Policy{MaxAttempts: 0, InitialDelay: time.Millisecond, MaxDelay: time.Second, Multiplier: 2}}, "MaxAttempts"},
		{"negative attempts", relay.Config{Retry: retry.Policy{MaxAttempts: -3, Multiplier: 2}}, "MaxAttempts"},
		{"negative delay", relay.Config{Retry: retry.Policy{MaxAttempts: 5, InitialDelay: -time.Millisecond, Multiplier: 2}}, "InitialDelay"},
		{"negative workers", relay.Config{Workers: -1}, "Workers"},
		{"negative in flight", relay.Config{MaxInFlight: -1}, "MaxInFlight"},
		{"negative publish timeout", relay.Config{PublishTimeout: -time.Second}, "PublishTimeout"},
		{"negative commit interval", relay.Config{CommitInterval: -1}, "CommitInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := relay.New(src, &fakePublisher{}, s, tc.cfg)
			if !errors.Is(err, relay.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("New() error %v, want one naming %s", err, tc.field)
			}
		})
	}
	if _, err := relay.New(nil, &fakePublisher{}, s, relay.Config{}); err == nil {
		t.Fatal("New accepted a nil source")
	}
	if _, err := relay.New(src, &fakePublisher{}, s, relay.Config{}); err != nil {
		t.Fatalf("zero config rejected: %v", err)
	}
}

func TestWorkerPanicEndsServeWithAnErrorAndLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		var panicked bool
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if m.Sequence == 3 && !panicked {
				panicked = true
				panic("injected")
			}
			return nil
		}}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{Workers: 2})
		for i := range 10 {
			w.write("order", "o1", i)
		}
		err := r.Serve(t.Context())
		if err == nil || !strings.Contains(err.Error(), "worker panic") {
			t.Fatalf("Serve() = %v, want the worker's panic as an error", err)
		}
		serve(t, r) // what a supervisor does
		settle(t, 10*time.Second, func() bool { return checker.Check(w.rec.History(), pub.observed(), nil).Lost == 0 })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() {
			t.Fatalf("after a worker panic and restart: %s", rep)
		}
	})
}

// A panic off the workers ends Serve with an error naming where it was,
// as a worker's does, and loses nothing: in a publish made on the reader
// (a read of one group, no worker busy), and in the publish of a lane set
// aside (its group's attempt failed on the reader, so it retries on a
// goroutine of its own).
func TestAPanicOffTheWorkersEndsServeWithAnErrorNamingWhere(t *testing.T) {
	for _, tc := range []struct {
		role      string
		failFirst bool   // o3's first attempt fails, setting its lane aside
		onStack   string // where the panic must be
		offStack  string // where it must not be
	}{
		{role: "reader", onStack: "publishOnReader"},
		{role: "aside lane", failFirst: true, onStack: "drainLane", offStack: "publishOnReader"},
	} {
		t.Run(tc.role, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := memstore.New()
				w := newWriter(t, s)
				var panicked bool
				pub := &runsPublisher{}
				if tc.failFirst {
					pub.agg, pub.first = "o3", func(context.Context) error { return errors.New("not enough replicas") }
				}
				pub.fail = func(m outbox.Message) error {
					if m.AggregateID == "o3" && !panicked {
						panicked = true
						stack := string(debug.Stack())
						if !strings.Contains(stack, tc.onStack) || tc.offStack != "" && strings.Contains(stack, tc.offStack) {
							t.Errorf("the panic is not in %s:\n%s", tc.role, stack)
						}
						panic("injected")
					}
					return nil
				}
				r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
				for i := range 10 {
					w.write("order", fmt.Sprintf("o%d", i), 1)
				}
				err := r.Serve(t.Context())
				if err == nil || !strings.Contains(err.Error(), tc.role+" panic") || !panicked {
					t.Fatalf("Serve() = %v, want the %s's panic as an error", err, tc.role)
				}
				serve(t, r)
				settle(t, 10*time.Second, func() bool { return checker.Check(w.rec.History(), pub.observed(), nil).Lost == 0 })
				if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() {
					t.Fatalf("after a panic in the %s and a restart: %s", tc.role, rep)
				}
			})
		})
	}
}

// failingSource fails its reads after the first batch.
type failingSource struct{ outbox.Source }

func (s failingSource) Open(ctx context.Context) (outbox.Cursor, error) {
	c, err := s.Source.Open(ctx)
	return &failingCursor{Cursor: c}, err
}

type failingCursor struct {
	outbox.Cursor
	reads int
}

func (c *failingCursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	if c.reads++; c.reads > 1 {
		return nil, errors.New("connection reset")
	}
	return c.Cursor.Next(ctx, max)
}

func TestSourceFailureEndsServeWithoutWaitingForItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		w.write("order", "o1", 1)
		pub := &fakePublisher{}
		r := newRelay(t, failingSource{memSource(t, s)}, pub, s, relay.Config{})
		err := r.Serve(t.Context()) // t.Context() stays alive: Serve must return on its own
		if err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("Serve() = %v, want the source's error", err)
		}
		// A record read but not yet started is not published: it was not
		// checkpointed either, so the restarted relay reads it again.
		if pos, _ := s.LoadCheckpoint(t.Context(), "default"); pos != "" && len(pub.published()) == 0 {
			t.Fatalf("checkpoint moved to %q past a record never published", pos)
		}
	})
}
