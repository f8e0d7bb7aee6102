package scylla

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/relay"
)

// progressMarker is what a consumer needs of the library's
// ProgressReporter.
type progressMarker interface {
	MarkProgress(ctx context.Context, p scyllacdc.Progress) error
}

// tracker hands decoded records to the relay and reports per-stream
// progress once the relay has acknowledged them. It is the relay.Cursor
// of the CDC source.
type tracker struct {
	out chan relay.Record
	log *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	seq     uint64
	pending []emitted      // emission order
	open    map[string]int // stream -> records not yet acknowledged
	closed  bool
	skipped int64 // rows that could not be decoded
}

type emitted struct {
	seq      uint64
	stream   string
	time     gocql.UUID
	reporter progressMarker
}

func newTracker(buffer int, log *slog.Logger) *tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &tracker{out: make(chan relay.Record, buffer), log: log, open: map[string]int{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// oldestPending is the CDC time of the oldest change read and not yet
// acknowledged (zero when none): how far the relay is behind the log.
func (t *tracker) oldestPending() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var oldest time.Time
	for _, e := range t.pending {
		if at := e.time.Time(); oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return oldest
}

// consume hands one change's outbox inserts to the relay, in order. It
// never returns an error for a row: one the library gave us but we cannot
// decode is logged and counted, since returning an error would stop every
// stream of the reader. It returns only when ctx ends (shutdown).
func (t *tracker) consume(ctx context.Context, stream string, at gocql.UUID, rows []changeRow, reporter progressMarker) error {
	for _, r := range rows {
		m, ok, err := decodeRow(r)
		if !ok {
			continue
		}
		if err != nil {
			t.mu.Lock()
			t.skipped++
			t.mu.Unlock()
			t.log.Error("outbox CDC row cannot be decoded; skipped", "stream", stream, "cdc_time", at.String(), "err", err)
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil
		}
		t.seq++
		e := emitted{seq: t.seq, stream: stream, time: at, reporter: reporter}
		t.pending = append(t.pending, e)
		t.open[stream]++
		t.mu.Unlock()
		select {
		case t.out <- relay.Record{Message: m, Position: relay.Position(strconv.FormatUint(e.seq, 10))}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// Next implements relay.Cursor.
func (t *tracker) Next(ctx context.Context, max int) ([]relay.Record, error) {
	select {
	case <-ctx.Done():
		return nil, nil
	case r := <-t.out:
		return t.fill([]relay.Record{r}, max), nil
	}
}

// fill adds what is already waiting to recs, up to max, without blocking.
func (t *tracker) fill(recs []relay.Record, max int) []relay.Record {
	for len(recs) < max {
		select {
		case r := <-t.out:
			recs = append(recs, r)
		default:
			return recs
		}
	}
	return recs
}

// Commit implements relay.Cursor: every record up to pos was acknowledged,
// so each stream's progress moves to its last acknowledged change.
func (t *tracker) Commit(ctx context.Context, pos relay.Position) error {
	upTo, err := strconv.ParseUint(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("scylla: bad CDC position %q", pos)
	}
	t.mu.Lock()
	latest := map[string]emitted{}
	n := 0
	for n < len(t.pending) && t.pending[n].seq <= upTo {
		e := t.pending[n]
		latest[e.stream] = e
		t.open[e.stream]--
		n++
	}
	t.pending = t.pending[n:]
	t.cond.Broadcast()
	t.mu.Unlock()
	for stream, e := range latest {
		if err := e.reporter.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: e.time}); err != nil {
			return fmt.Errorf("scylla: progress of stream %x: %w", stream, err)
		}
	}
	return nil
}

// waitAcknowledged blocks until every record of stream was acknowledged,
// or the tracker is closed. A consumer's End calls it, so the library
// does not move to the next generation past unacknowledged events.
func (t *tracker) waitAcknowledged(stream string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.open[stream] > 0 && !t.closed {
		t.cond.Wait()
	}
}

// Close implements relay.Cursor.
func (t *tracker) Close() error {
	t.mu.Lock()
	t.closed = true
	t.cond.Broadcast()
	t.mu.Unlock()
	return nil
}

// Skipped counts rows that could not be decoded.
func (t *tracker) Skipped() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}

// consumerFactory creates one consumer per CDC stream for the library.
type consumerFactory struct{ t *tracker }

var _ scyllacdc.ChangeConsumerFactory = consumerFactory{}

// CreateChangeConsumer never fails: a nil consumer with an error would
// make the library panic later.
func (f consumerFactory) CreateChangeConsumer(_ context.Context, in scyllacdc.CreateChangeConsumerInput) (scyllacdc.ChangeConsumer, error) {
	return &consumer{t: f.t, stream: string(in.StreamID), reporter: in.ProgressReporter}, nil
}

type consumer struct {
	t        *tracker
	stream   string
	reporter progressMarker
}

// Consume never returns an error for one change.
func (c *consumer) Consume(ctx context.Context, ch scyllacdc.Change) error {
	rows := make([]changeRow, len(ch.Delta))
	for i, r := range ch.Delta {
		rows[i] = r
	}
	return c.t.consume(ctx, c.stream, ch.Time, rows, c.reporter)
}

// End waits until the stream's events were acknowledged: only then may
// the library start the next generation.
func (c *consumer) End() error {
	c.t.waitAcknowledged(c.stream)
	return nil
}
