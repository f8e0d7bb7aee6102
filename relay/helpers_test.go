package relay_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
	"github.com/outbox-dev/outbox/store/poll"
)

// fakePublisher records what it acknowledged, in order; fail decides
// each attempt's outcome.
type fakePublisher struct {
	mu   sync.Mutex
	got  []outbox.Message
	fail func(outbox.Message) error
}

func (p *fakePublisher) Publish(ctx context.Context, m outbox.Message) error {
	p.mu.Lock()
	fail := p.fail
	p.mu.Unlock()
	if fail != nil {
		if err := fail(m); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, m)
	return nil
}

func (p *fakePublisher) setFail(f func(outbox.Message) error) {
	p.mu.Lock()
	p.fail = f
	p.mu.Unlock()
}

func (p *fakePublisher) published() []outbox.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]outbox.Message(nil), p.got...)
}

// observed turns the publisher's log into checker input: one stream.
func (p *fakePublisher) observed() []checker.Observed {
	var out []checker.Observed
	for i, m := range p.published() {
		out = append(out, checker.Observed{Topic: "all", Offset: int64(i), ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: m.Sequence})
	}
	return out
}

// writer appends messages to a memstore and records the history.
type writer struct {
	t   testing.TB
	s   *memstore.Store
	rec *checker.Recorder
	mu  sync.Mutex
	seq map[string]int64
}

func newWriter(t testing.TB, s *memstore.Store) *writer {
	return &writer{t: t, s: s, rec: checker.NewRecorder(nil), seq: map[string]int64{}}
}

// write appends one event to aggregate agg of type typ, with payload.
func (w *writer) write(typ, agg string, payload any) outbox.Message {
	w.t.Helper()
	w.mu.Lock()
	w.seq[typ+agg]++
	seq := w.seq[typ+agg]
	w.mu.Unlock()
	m, err := outbox.NewMessage(typ, agg, fmt.Sprintf("%sChanged", typ), seq, payload)
	if err != nil {
		w.t.Fatal(err)
	}
	err = w.s.Transact(context.Background(), func(tx *memstore.Tx) error { return tx.Append(m) })
	if err != nil {
		w.t.Fatal(err)
	}
	w.rec.Record(checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: seq})
	return m
}

// countingSource counts cursor reads, to show reading stops.
type countingSource struct {
	outbox.Source
	reads atomic.Int64
}

func (s *countingSource) Open(ctx context.Context) (outbox.Cursor, error) {
	c, err := s.Source.Open(ctx)
	return &countingCursor{Cursor: c, reads: &s.reads}, err
}

type countingCursor struct {
	outbox.Cursor
	reads *atomic.Int64
}

func (c *countingCursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	c.reads.Add(1)
	return c.Cursor.Next(ctx, max)
}

func memSource(t testing.TB, s *memstore.Store) *countingSource {
	src, err := poll.NewSource(s, poll.Config{Interval: 20 * time.Millisecond, Wake: s.Wake()})
	if err != nil {
		t.Fatal(err)
	}
	return &countingSource{Source: src}
}

// serve runs r until the returned stop is called; stop waits for Serve.
func serve(t testing.TB, r *relay.Relay) (stop func() error) { return testenv.Serve(t, r) }

// deadLetteredIDs lists event ids still in the dead-letter store as parked
// or skipped: the ones the checker must not count as lost.
func deadLetteredIDs(t testing.TB, s interface {
	ListDeadLetters(context.Context, outbox.DeadLetterFilter) ([]outbox.DeadLetter, error)
}) []string {
	all, err := s.ListDeadLetters(context.Background(), outbox.DeadLetterFilter{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range all {
		if d.Status != outbox.StatusReplayed {
			ids = append(ids, d.Message.ID.String())
		}
	}
	return ids
}

// transitionLog collects breaker transitions and reads at each.
type transitionLog struct {
	mu       sync.Mutex
	src      *countingSource
	failures func() int64 // optional
	steps    []transition
}

type transition struct {
	to       string
	reads    int64
	failures int64
	at       time.Time
}

func (l *transitionLog) OnBreakerStateChange(_, to breaker.State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tr := transition{to: to.String(), reads: l.src.reads.Load(), at: time.Now()}
	if l.failures != nil {
		tr.failures = l.failures()
	}
	l.steps = append(l.steps, tr)
}

func (l *transitionLog) all() []transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]transition(nil), l.steps...)
}
