package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
)

// One aggregate fails transiently forever (a topic that does not exist,
// say) while the others are published. The read-ahead stays within
// MaxInFlight, the others keep flowing past it, the checkpoint waits just
// before it, and it shows as stuck; past StuckTimeout it is parked with
// the reason, and the checkpoint moves on.
func TestStuckAggregateBoundsTheWindowThenIsParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if m.AggregateID == "stuck" {
				return errors.New("UNKNOWN_TOPIC_OR_PARTITION")
			}
			return nil
		}}
		const window = 64
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{MaxInFlight: window, MaxBehind: 10_000, StuckTimeout: time.Minute})
		serve(t, r)
		w.write("order", "a", 0)
		stuck := w.write("order", "stuck", 0) // position 2
		const others = 5000
		for i := range others {
			w.write("order", fmt.Sprintf("o%d", i%50), i)
		}
		settle(t, 30*time.Second, func() bool { return len(pub.published()) == others+1 })
		pass(2 * time.Second) // a round of attempts, and checkpoints
		st := r.Stats()
		// Equal, not just at most: the window filled, so the bound was
		// exercised (and a peak never measured cannot pass).
		if st.PeakInFlight != window {
			t.Fatalf("peak in flight %d, want MaxInFlight %d", st.PeakInFlight, window)
		}
		if pos, _ := s.LoadCheckpoint(t.Context(), "default"); pos != "1" {
			t.Fatalf("checkpoint %q while position 2 is unsettled, want 1", pos)
		}
		if len(st.Stuck) != 1 || st.Stuck[0].Aggregate != stuck.Key() || st.Stuck[0].EventID != stuck.ID.String() ||
			!strings.Contains(st.Stuck[0].Error, "UNKNOWN_TOPIC") || st.DeadLettered != 0 {
			t.Fatalf("stuck aggregate not visible: %+v", st)
		}
		// The others keep the broker acknowledging: past the deadline the
		// stuck message is parked with its reason.
		for i := 0; r.Stats().DeadLettered == 0; i++ {
			w.write("order", "a", i+1)
			pass(time.Second)
			if i > 120 {
				t.Fatal("not parked within two minutes of a one-minute StuckTimeout")
			}
		}
		parked, _ := s.ParkedMessages(t.Context(), stuck.Key())
		if len(parked) != 1 || !strings.Contains(parked[0].Error, "stuck") || !strings.Contains(parked[0].Error, "UNKNOWN_TOPIC") {
			t.Fatalf("parked entry %+v, want the stuck message with its reason", parked)
		}
		settle(t, 10*time.Second, func() bool {
			pos, _ := s.LoadCheckpoint(t.Context(), "default")
			n, _ := s.Backlog(t.Context(), "default")
			return pos != "1" && n == 0
		})
		if st := r.Stats(); len(st.Stuck) != 0 || st.PeakInFlight > window {
			t.Fatalf("after parking: %+v", st)
		}
		rep := checker.Check(w.rec.History(), pub.observed(), deadLetteredIDs(t, s))
		if !rep.OK() || rep.DeadLettered != 1 {
			t.Fatalf("after parking the stuck aggregate: %s", rep)
		}
	})
}

// During an outage nothing is acknowledged: however long it lasts, the
// deadline parks nothing.
func TestOutageLongerThanStuckTimeoutParksNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		var down atomic.Bool
		down.Store(true)
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		}}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{StuckTimeout: time.Minute})
		serve(t, r)
		for i := range 20 {
			w.write("order", fmt.Sprintf("o%d", i%5), i)
		}
		pass(30 * time.Minute) // rounds complete slowly: the open breaker lets one probe in per 30 s
		if st := r.Stats(); st.DeadLettered != 0 || st.Published != 0 {
			t.Fatalf("during an outage: %+v", st)
		}
		down.Store(false)
		settle(t, 2*time.Minute, func() bool { return len(pub.published()) == 20 })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || r.Stats().DeadLettered != 0 {
			t.Fatalf("after the outage: %s, %+v", rep, r.Stats())
		}
	})
}

// watchingPublisher reports the broker's reachability like the Kafka
// publisher does from its connection hooks.
type watchingPublisher struct {
	*fakePublisher
	watch chan func(error)
}

func (p *watchingPublisher) WatchBroker(fn func(error)) func() {
	fn(nil)
	p.watch <- fn
	return func() {}
}

// A broker killed hard leaves publishes hanging (the idempotent producer
// cannot fail a request it sent): the breaker must still open at once,
// and close as soon as the broker answers, not after its open timeout.
func TestBrokerWatcherOpensAndClosesTheBreakerAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		release := make(chan struct{})
		var hang atomic.Bool
		pub := &watchingPublisher{watch: make(chan func(error), 1), fakePublisher: &fakePublisher{fail: func(m outbox.Message) error {
			if hang.Load() {
				<-release
			}
			return nil
		}}}
		src := memSource(t, s)
		r := newRelay(t, src, pub, s, relay.Config{})
		serve(t, r)
		notify := <-pub.watch
		w.write("order", "a", 0)
		settle(t, time.Second, func() bool { return len(pub.published()) == 1 })

		hang.Store(true)
		w.write("order", "a", 1)
		pass(100 * time.Millisecond)
		notify(errors.New("dial tcp 127.0.0.1:9092: connection refused"))
		if st := r.Stats(); st.Breaker != "open" {
			t.Fatalf("breaker %s right after the broker became unreachable, want open", st.Breaker)
		}
		reads := src.reads.Load()
		for i := range 10 {
			w.write("order", "b", i)
		}
		pass(10 * time.Second)
		if got := src.reads.Load(); got > reads+1 {
			t.Fatalf("%d reads while the broker was unreachable", got-reads)
		}
		hang.Store(false)
		close(release)
		notify(nil)
		if st := r.Stats(); st.Breaker != "closed" {
			t.Fatalf("breaker %s right after the broker answered, want closed", st.Breaker)
		}
		settle(t, 2*time.Second, func() bool { return len(pub.published()) == 12 })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("after the outage: %s", rep)
		}
	})
}

// openFunc is a source whose Open fails with the function's error.
type openFunc func() error

func (f openFunc) Open(context.Context) (outbox.Cursor, error) { return nil, f() }

func TestFatalSourceErrorIsReturnedAsFatal(t *testing.T) {
	s := memstore.New()
	src := openFunc(func() error { return outbox.Fatal(errors.New("slot outbox_relay is missing")) })
	r := newRelay(t, src, &fakePublisher{}, s, relay.Config{})
	err := r.Serve(t.Context())
	if !outbox.IsFatal(err) || !strings.Contains(err.Error(), "slot outbox_relay is missing") {
		t.Fatalf("Serve() = %v, want the fatal source error", err)
	}
}

// badSource hands the relay one row it could not decode among good ones.
type badSource struct {
	outbox.Source
	bad outbox.Record
}

func (s badSource) Open(ctx context.Context) (outbox.Cursor, error) {
	c, err := s.Source.Open(ctx)
	return &badCursor{Cursor: c, bad: s.bad}, err
}

type badCursor struct {
	outbox.Cursor
	bad  outbox.Record
	sent bool
}

func (c *badCursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	recs, err := c.Cursor.Next(ctx, max)
	if !c.sent && len(recs) > 0 {
		c.sent = true
		c.bad.Position = recs[0].Position
		return append([]outbox.Record{c.bad}, recs...), err
	}
	return recs, err
}

// A row the source cannot decode is dead-lettered with the reason (its
// aggregate parked), never published and never dropped; the others flow.
func TestUndecodableRecordIsDeadLettered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		raw, _ := outbox.NewMessage("order", "broken", "Unknown", 0, map[string]string{"raw": "\x00garbage"})
		pub := &fakePublisher{}
		r := newRelay(t, badSource{Source: memSource(t, s), bad: outbox.Record{Message: raw, Err: errors.New("payload is not JSON")}}, pub, s, relay.Config{})
		serve(t, r)
		for i := range 5 {
			w.write("order", "ok", i)
		}
		settle(t, 10*time.Second, func() bool { return len(pub.published()) == 5 && r.Stats().DeadLettered == 1 })
		parked, _ := s.ParkedMessages(t.Context(), raw.Key())
		if len(parked) != 1 || parked[0].Message.ID != raw.ID || !strings.Contains(parked[0].Error, "payload is not JSON") {
			t.Fatalf("parked %+v, want the undecodable row with its reason", parked)
		}
		for _, m := range pub.published() {
			if m.ID == raw.ID {
				t.Fatal("the undecodable row was published")
			}
		}
	})
}

// While one aggregate is stuck the others flow past it, but the
// checkpoint cannot: a crash then would publish them all again. MaxBehind
// caps how far reading runs ahead of the stuck record, so what a crash
// republishes stays bounded; once the stuck record is parked, the rest
// follows.
func TestMaxBehindBoundsWhatACrashRepublishesWhileAnAggregateIsStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if m.AggregateID == "stuck" {
				return errors.New("NOT_ENOUGH_REPLICAS")
			}
			return nil
		}}
		const behind = 100
		crashed := make(chan struct{})
		r := newRelay(t, &crashingSource{Source: memSource(t, s), crashed: crashed}, pub, s,
			relay.Config{MaxInFlight: 8, MaxBehind: behind, StuckTimeout: time.Minute})
		stop := serve(t, r)
		w.write("order", "stuck", 0)
		for i := range 1000 {
			w.write("order", fmt.Sprintf("o%d", i%20), i)
		}
		settle(t, 10*time.Second, func() bool { return len(pub.published()) == behind-1 })
		pass(5 * time.Second)
		if n := len(pub.published()); n != behind-1 {
			t.Fatalf("published %d while the stuck record holds the checkpoint; want reading to stop %d records past it", n, behind)
		}
		close(crashed) // the process dies: no further checkpoint
		stop()
		pub2 := &fakePublisher{fail: pub.fail}
		r2 := newRelay(t, memSource(t, s), pub2, s, relay.Config{MaxInFlight: 8, MaxBehind: behind, StuckTimeout: time.Minute})
		serve(t, r2)
		settle(t, 10*time.Second, func() bool { return len(pub2.published()) >= behind-1 })
		first := pub2.published()[:behind-1]
		again := 0
		for _, m := range first {
			for _, p := range pub.published() {
				if p.ID == m.ID {
					again++
				}
			}
		}
		if again > behind {
			t.Fatalf("a crash republished %d records, more than MaxBehind %d", again, behind)
		}
		// Past the deadline the stuck record is parked and the rest flows.
		// (With nothing else to publish, its failures open the breaker,
		// which slows its rounds; others were acknowledged after it began
		// failing, so it is still parked once a round ends past the
		// deadline.)
		settle(t, 10*time.Minute, func() bool { return r2.Stats().DeadLettered == 1 && len(pub2.published()) >= 1000 })
	})
}

// fencedSource's cursor refuses publishing once fenced is closed, as a
// cursor read under a lease does once the lease is lost.
type fencedSource struct {
	outbox.Source
	fenced chan struct{}
}

func (s fencedSource) Open(ctx context.Context) (outbox.Cursor, error) {
	c, err := s.Source.Open(ctx)
	return fencedCursor{Cursor: c, fenced: s.fenced}, err
}

type fencedCursor struct {
	outbox.Cursor
	fenced chan struct{}
}

func (c fencedCursor) Fence() error {
	select {
	case <-c.fenced:
		return errors.New("lease lost to relay-b")
	default:
		return nil
	}
}

// A relay whose cursor is fenced (its lease lost) publishes nothing more,
// not even a retry of the record in hand, and Serve ends with the reason.
func TestAFencedRelayStopsPublishingAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		var down atomic.Bool
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		}}
		fenced := make(chan struct{})
		r := newRelay(t, fencedSource{Source: memSource(t, s), fenced: fenced}, pub, s, relay.Config{})
		done := make(chan error, 1)
		go func() { done <- r.Serve(t.Context()) }()
		w.write("order", "a", 0)
		settle(t, time.Second, func() bool { return len(pub.published()) == 1 })
		down.Store(true)
		w.write("order", "a", 1) // in hand, retried round after round
		pass(500 * time.Millisecond)
		close(fenced)
		down.Store(false) // the broker answers again, but this relay may not publish
		pass(5 * time.Second)
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "lease lost") {
				t.Fatalf("Serve() = %v, want the fence's reason", err)
			}
		default:
			t.Fatal("a fenced relay kept running")
		}
		if n := len(pub.published()); n != 1 {
			t.Fatalf("%d published; a fenced relay must publish nothing more", n)
		}
	})
}
