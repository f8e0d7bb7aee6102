package relay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
)

// breakerWatch records every breaker transition.
type breakerWatch struct {
	mu sync.Mutex
	to []string
}

func (b *breakerWatch) OnBreakerStateChange(_, to breaker.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.to = append(b.to, to.String())
}

func (b *breakerWatch) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.to...)
}

// One aggregate fails transiently round after round while the others are
// published, so the breaker stays closed: however many rounds it fails
// (well under StuckTimeout), it is never dead-lettered, its later event
// waits behind it, and both are published, in order, once it recovers.
func TestTransientFailuresOfOneAggregateAreNeverDeadLetteredWhileTheBreakerIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		var failing atomic.Bool
		failing.Store(true)
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if m.AggregateID == "flaky" && failing.Load() {
				return errors.New("NOT_ENOUGH_REPLICAS")
			}
			return nil
		}}
		watch := &breakerWatch{}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{StuckTimeout: 10 * time.Minute, Hooks: []relay.Hook{watch}})
		serve(t, r)
		first := w.write("order", "flaky", 0)
		second := w.write("order", "flaky", 1)
		// A round is 5 attempts over 1.2 s and a 0.5 s pause: a minute is
		// about 35 rounds, a tenth of StuckTimeout.
		start := time.Now()
		for i := 0; time.Since(start) < time.Minute; i++ {
			w.write("order", fmt.Sprintf("o%d", i%10), i)
			pass(100 * time.Millisecond)
			if st := r.Stats(); st.DeadLettered != 0 || st.Parked != 0 {
				t.Fatalf("after %s of transient failures (%d rounds) with the breaker %s: %d dead-lettered, %d parked",
					time.Since(start), st.Failed, st.Breaker, st.DeadLettered, st.Parked)
			}
		}
		st := r.Stats()
		if st.Failed < 20 {
			t.Fatalf("%d failed rounds in a minute: the aggregate was not tried round after round", st.Failed)
		}
		if tr := watch.all(); len(tr) != 0 {
			t.Fatalf("breaker transitions %v: the others kept the broker answering, it must have stayed closed", tr)
		}
		if len(st.Stuck) != 1 || st.Stuck[0].EventID != first.ID.String() {
			t.Fatalf("stuck %+v, want the first flaky event", st.Stuck)
		}
		for _, m := range pub.published() {
			if m.AggregateID == "flaky" {
				t.Fatalf("flaky event %d published while failing", m.Sequence)
			}
		}

		failing.Store(false)
		settle(t, 10*time.Second, func() bool {
			n := 0
			for _, m := range pub.published() {
				if m.ID == first.ID || m.ID == second.ID {
					n++
				}
			}
			return n == 2
		})
		rep := checker.Check(w.rec.History(), pub.observed(), deadLetteredIDs(t, s))
		if !rep.OK() || rep.Dup != 0 || rep.DeadLettered != 0 || r.Stats().DeadLettered != 0 || len(r.Stats().Stuck) != 0 {
			t.Fatalf("after recovery: %s; %+v", rep, r.Stats())
		}
	})
}

// haltingPublisher is a relay process's view of the broker: each publish
// takes latency; once halted (the process is gone) nothing more reaches
// the broker.
type haltingPublisher struct {
	inner     *fakePublisher
	latency   time.Duration
	halted    atomic.Bool
	published atomic.Int64
	onPublish func(n int64)
}

func (p *haltingPublisher) Publish(ctx context.Context, m outbox.Message) error {
	elapse(p.latency)
	if p.halted.Load() {
		return errors.New("process gone")
	}
	if err := p.inner.Publish(ctx, m); err != nil {
		return err
	}
	p.onPublish(p.published.Add(1))
	return nil
}

// checkpointHook calls fn after each checkpoint written.
type checkpointHook func(outbox.Position)

func (h checkpointHook) OnCheckpoint(pos outbox.Position, _ relay.Lag) { h(pos) }

// The duplicate bound: a relay that crashes (its later checkpoints lost,
// nothing more reaching the broker) republishes, once restarted, only
// what it had published past its last checkpoint, which is at most the
// records in flight: MaxInFlight. With checkpoints never written, every
// record published before the crash would come again.
func TestCrashRepublishesAtMostMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxInFlight = 8
		s := memstore.New()
		w := newWriter(t, s)
		for i := range 600 {
			w.write("order", fmt.Sprintf("o%d", i%20), i)
		}
		broker := &fakePublisher{}
		crashed := make(chan struct{})
		pub := &haltingPublisher{inner: broker, latency: 10 * time.Millisecond}
		var once sync.Once
		var lastCheckpoint atomic.Value
		crash := func() { once.Do(func() { pub.halted.Store(true); close(crashed) }) }
		// Crash at the first checkpoint written after 100 publishes, the
		// moment the window past it is smallest; and at 300 publishes in
		// any case, so a relay that never checkpoints crashes too.
		pub.onPublish = func(n int64) {
			if n >= 300 {
				crash()
			}
		}
		hook := checkpointHook(func(pos outbox.Position) {
			select {
			case <-crashed: // a dropped commit is not written
				return
			default:
			}
			lastCheckpoint.Store(pos)
			if pub.published.Load() >= 100 {
				crash()
			}
		})
		first := newRelay(t, &crashingSource{Source: memSource(t, s), crashed: crashed}, pub, s,
			relay.Config{MaxInFlight: maxInFlight, DrainTimeout: time.Nanosecond, Hooks: []relay.Hook{hook}})
		stop := serve(t, first)
		settle(t, time.Minute, func() bool {
			select {
			case <-crashed:
				return true
			default:
				return false
			}
		})
		stop()
		before := len(broker.published())
		restartAndCatchUp(t, s, broker, maxInFlight)
		rep := checker.Check(w.rec.History(), broker.observed(), nil)
		if !rep.OK() {
			t.Fatalf("after a crash and restart: %s", rep)
		}
		if rep.Dup > maxInFlight {
			t.Fatalf("crashed after %d publishes with the checkpoint at %v: %d duplicates, want at most MaxInFlight %d (%s)",
				before, lastCheckpoint.Load(), rep.Dup, maxInFlight, rep)
		}
		t.Logf("crashed after %d publishes, checkpoint at %v: %s", before, lastCheckpoint.Load(), rep)
	})
}

// restartAndCatchUp starts a relay from the store's checkpoint and waits
// until it has read every record past it and settled them all; it does
// not rely on that relay's own checkpoints.
func restartAndCatchUp(t *testing.T, s *memstore.Store, pub outbox.Publisher, maxInFlight int) {
	t.Helper()
	behind, err := s.Backlog(t.Context(), "default")
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, memSource(t, s), pub, s, relay.Config{MaxInFlight: maxInFlight})
	serve(t, r)
	settle(t, time.Minute, func() bool { st := r.Stats(); return st.Read == behind && st.InFlight == 0 })
}

// lostAckPublisher reaches the broker, and then, once acksLost, never
// hears back (the process dies before the acknowledgement arrives).
type lostAckPublisher struct {
	inner    *fakePublisher
	acksLost atomic.Bool
	sent     atomic.Int64
}

func (p *lostAckPublisher) Publish(ctx context.Context, m outbox.Message) error {
	elapse(10 * time.Millisecond)
	if err := p.inner.Publish(ctx, m); err != nil {
		return err
	}
	if p.acksLost.Load() {
		p.sent.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// The worst case of the bound, made exact: everything before is
// acknowledged and checkpointed; then a whole window of records reaches
// the broker and the relay crashes before any acknowledgement. The
// restarted relay republishes that window and nothing else.
func TestCrashWithAWholeWindowUnacknowledgedRepublishesOnlyThatWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxInFlight = 8
		s := memstore.New()
		w := newWriter(t, s)
		broker := &fakePublisher{}
		pub := &lostAckPublisher{inner: broker}
		crashed := make(chan struct{})
		first := newRelay(t, &crashingSource{Source: memSource(t, s), crashed: crashed}, pub, s,
			relay.Config{MaxInFlight: maxInFlight, DrainTimeout: time.Nanosecond})
		stop := serve(t, first)
		for i := range 100 {
			w.write("order", fmt.Sprintf("o%d", i%20), i)
		}
		settle(t, time.Minute, func() bool { return len(broker.published()) == 100 })
		pass(time.Second) // checkpoints written

		pub.acksLost.Store(true)
		for i := range 100 {
			w.write("order", fmt.Sprintf("o%d", i%20), 100+i)
		}
		settle(t, time.Minute, func() bool { return pub.sent.Load() >= maxInFlight })
		pass(time.Second) // nothing more is read: the window is full
		close(crashed)
		stop()
		sent := pub.sent.Load()
		restartAndCatchUp(t, s, broker, maxInFlight)
		rep := checker.Check(w.rec.History(), broker.observed(), nil)
		if !rep.OK() {
			t.Fatalf("after a crash and restart: %s", rep)
		}
		if sent != maxInFlight || rep.Dup > maxInFlight {
			t.Fatalf("%d records sent and unacknowledged at the crash, %d republished; want %d and at most MaxInFlight %d (%s)",
				sent, rep.Dup, maxInFlight, maxInFlight, rep)
		}
	})
}

// Reading stops at MaxInFlight records not yet settled, whatever the
// backlog, and resumes as they settle.
func TestReadingStopsAtMaxInFlight(t *testing.T) {
	for _, maxInFlight := range []int{1, 8, 64} {
		t.Run(fmt.Sprint(maxInFlight), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := memstore.New()
				w := newWriter(t, s)
				release := make(chan struct{})
				pub := &fakePublisher{fail: func(outbox.Message) error { <-release; return nil }}
				r := newRelay(t, memSource(t, s), pub, s, relay.Config{MaxInFlight: maxInFlight})
				serve(t, r)
				events := 3*maxInFlight + 5
				for i := range events { // one aggregate each: nothing waits in a lane
					w.write("order", fmt.Sprintf("o%d", i), i)
				}
				pass(10 * time.Second)
				if st := r.Stats(); st.Read != int64(maxInFlight) || st.InFlight != int64(maxInFlight) || st.PeakInFlight != int64(maxInFlight) {
					t.Fatalf("with every publish hanging: read %d, in flight %d, peak %d; want all %d",
						st.Read, st.InFlight, st.PeakInFlight, maxInFlight)
				}
				close(release)
				settle(t, time.Minute, func() bool { return len(pub.published()) == events })
				if st := r.Stats(); st.Read != int64(events) || st.PeakInFlight != int64(maxInFlight) {
					t.Fatalf("after release: read %d of %d, peak %d, want peak %d", st.Read, events, st.PeakInFlight, maxInFlight)
				}
				if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
					t.Fatalf("after release: %s", rep)
				}
			})
		})
	}
}

// slowPublisher acknowledges each publish after took, unless its
// context ends first, as the Kafka publisher does.
type slowPublisher struct {
	fakePublisher
	took time.Duration
}

func (p *slowPublisher) Publish(ctx context.Context, m outbox.Message) error {
	select {
	case <-time.After(p.took):
		return p.fakePublisher.Publish(ctx, m)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown (SIGTERM cancels Serve's context): publishes in flight get
// DrainTimeout to finish, nothing new starts, and the last checkpoint
// covers what drained. A publish slower than DrainTimeout is abandoned
// unacknowledged, and the checkpoint stays before it.
func TestShutdownDrainsInFlightPublishesAndWritesTheLastCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name           string
		publishTakes   time.Duration
		wantReturn     time.Duration // after the cancel, which comes 1 s in
		wantPublished  int
		wantCheckpoint outbox.Position
	}{
		{"publishes drain within DrainTimeout", 2 * time.Second, time.Second, 10, "10"},
		{"publishes slower than DrainTimeout are abandoned", 30 * time.Second, 5 * time.Second, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := memstore.New()
				w := newWriter(t, s)
				pub := &slowPublisher{took: tc.publishTakes}
				r := newRelay(t, memSource(t, s), pub, s, relay.Config{DrainTimeout: 5 * time.Second})
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- r.Serve(ctx) }()
				for i := range 10 {
					w.write("order", fmt.Sprintf("o%d", i), i)
				}
				w.write("order", "o0", 10) // position 11: waits in o0's lane
				pass(time.Second)
				if st := r.Stats(); st.InFlight != 11 || len(pub.published()) != 0 {
					t.Fatalf("before the shutdown: %d in flight, %d published; want 11 and 0", st.InFlight, len(pub.published()))
				}
				cancel()
				stopped := time.Now()
				if err := <-done; err != nil {
					t.Fatalf("Serve() = %v after its context ended, want nil", err)
				}
				if took := time.Since(stopped); took != tc.wantReturn {
					t.Errorf("Serve returned %s after the shutdown, want %s", took, tc.wantReturn)
				}
				if got := len(pub.published()); got != tc.wantPublished {
					t.Errorf("%d published, want %d: in-flight publishes drain, queued ones do not start", got, tc.wantPublished)
				}
				if pos, err := s.LoadCheckpoint(t.Context(), "default"); err != nil || pos != tc.wantCheckpoint {
					t.Errorf("checkpoint %q (%v) after the shutdown, want %q", pos, err, tc.wantCheckpoint)
				}
			})
		})
	}
}

// A replay is refused once the failed entry was replayed MaxReplays
// times; RequestOptions' zero MaxReplays means 3. Skip is never refused.
func TestReplayLimitDefaultsToThree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replays int
		action  outbox.Action
		opts    dlq.RequestOptions
		refused bool
	}{
		{"never replayed", 0, outbox.ActionReplay, dlq.RequestOptions{}, false},
		{"replayed twice", 2, outbox.ActionReplay, dlq.RequestOptions{}, false},
		{"replayed three times", 3, outbox.ActionReplay, dlq.RequestOptions{}, true},
		{"replayed four times", 4, outbox.ActionReplay, dlq.RequestOptions{}, true},
		{"a higher limit given", 3, outbox.ActionReplay, dlq.RequestOptions{MaxReplays: 5}, false},
		{"a lower limit given", 1, outbox.ActionReplay, dlq.RequestOptions{MaxReplays: 1}, true},
		{"skip after four replays", 4, outbox.ActionSkip, dlq.RequestOptions{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := memstore.New()
			m, err := outbox.NewMessage("order", "p", "OrderCreated", 1, map[string]int{"n": 1})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			d, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: m, Error: "too large", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now})
			if err != nil {
				t.Fatal(err)
			}
			for range tc.replays { // each failed replay counts
				if err := s.FailAction(ctx, m.Key(), d.ID, "still too large"); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := s.GetDeadLetter(ctx, d.ID); err != nil || got.ReplayCount != tc.replays {
				t.Fatalf("replay count %d (%v), want %d", got.ReplayCount, err, tc.replays)
			}
			_, err = dlq.Request(ctx, s, m.Key(), tc.action, tc.opts)
			if refused := errors.Is(err, dlq.ErrReplayLimit); refused != tc.refused || (!tc.refused && err != nil) {
				t.Fatalf("%s after %d replays with %+v: %v; want refused %v", tc.action, tc.replays, tc.opts, err, tc.refused)
			}
		})
	}
}
