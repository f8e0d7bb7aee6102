package scylla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/outbox"
)

// progressMarker is what a consumer needs of the library's
// ProgressReporter.
type progressMarker interface {
	MarkProgress(ctx context.Context, p scyllacdc.Progress) error
}

// tracker hands decoded records to the relay and reports per-stream
// progress once the relay has acknowledged them. It is the outbox.Cursor
// of the CDC source.
//
// Progress is a cdc$time and the library resumes strictly after it, but
// one change (one cdc$time) carries every row a LOGGED BATCH wrote to the
// partition. So progress counts whole changes: a stream's progress moves
// to a change only once every row of it was acknowledged, including rows
// consume is still waiting to hand over.
type tracker struct {
	out chan handover
	log *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	seq     uint64
	pending []received     // handed to the relay, in the order Next returned them
	open    map[string]int // stream -> rows counted in and not yet acknowledged
	unacked map[*change]struct{}
	// stalled streams left a change part-way (the reader stopped while
	// consume waited): that change never finishes, so progress stays
	// before it as long as nothing later of the stream is handed over.
	stalled map[string]bool
	closed  bool
	quit    chan struct{} // closed by Close: a blocked consume gives up
	// undecodable counts rows handed over as dead letters because they
	// could not be decoded.
	undecodable int64

	// floor is each stream's progress as saved or as last reported: an
	// empty read of the stream's group may end before it (the group reads
	// from its least advanced stream), and progress must not go back.
	floor map[string]gocql.UUID
	// idleSaved is when each stream's progress was last moved on by an
	// empty read; idleEvery spaces those conditional writes out.
	idleSaved map[string]time.Time
	idleEvery time.Duration
	now       func() time.Time
	// progressEvery spaces out each stream's progress writes (0: every
	// commit); unsaved holds the latest finished change of a stream not
	// written yet, and marked when the stream's progress was last written.
	progressEvery time.Duration
	unsaved       map[string]*change
	marked        map[string]time.Time
}

// change is one CDC change of one stream: the rows of one cdc$time.
type change struct {
	stream   string
	time     gocql.UUID
	reporter progressMarker
	left     int // rows not yet acknowledged, handed over or not
}

// handover is one row on its way to the relay; err is set for a row that
// could not be decoded (m is then its dead letter).
type handover struct {
	m      outbox.Message
	err    error
	change *change
}

type received struct {
	seq    uint64
	change *change
}

func newTracker(buffer int, log *slog.Logger) *tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &tracker{out: make(chan handover, buffer), log: log, open: map[string]int{},
		unacked: map[*change]struct{}{}, stalled: map[string]bool{}, quit: make(chan struct{}),
		floor: map[string]gocql.UUID{}, idleSaved: map[string]time.Time{}, idleEvery: time.Minute, now: time.Now,
		unsaved: map[string]*change{}, marked: map[string]time.Time{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// oldestPending is the CDC time of the oldest change read and not yet
// acknowledged (zero when none): how far the relay is behind the log.
func (t *tracker) oldestPending() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var oldest time.Time
	for c := range t.unacked {
		if at := c.time.Time(); oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return oldest
}

// consume hands one change's outbox inserts to the relay, in order. It
// never returns an error for a row, since that would stop every stream of
// the reader: a row it cannot decode goes to the relay as a record with
// Err set, which the relay dead-letters (parking its aggregate), and it
// counts for progress like any other row. It returns early only when ctx
// ends or the tracker is closed (the reader is stopping).
func (t *tracker) consume(ctx context.Context, stream string, at gocql.UUID, rows []changeRow, reporter progressMarker) error {
	var msgs []handover
	for _, r := range rows {
		m, ok, err := decodeRow(r)
		if !ok {
			continue
		}
		if err != nil {
			m = undecodable(stream, at, r, m, err)
			t.mu.Lock()
			t.undecodable++
			t.mu.Unlock()
			t.log.Error("outbox CDC row cannot be decoded; handed to the relay to dead-letter", "stream", fmt.Sprintf("%x", stream),
				"cdc_time", at.String(), "event_id", m.ID, "aggregate", m.Key().String(), "err", err)
		}
		msgs = append(msgs, handover{m: m, err: err})
	}
	if len(msgs) == 0 {
		return nil
	}
	c := &change{stream: stream, time: at, reporter: reporter, left: len(msgs)}
	t.mu.Lock()
	if t.closed || t.stalled[stream] {
		t.mu.Unlock()
		return nil
	}
	// Counted whole before the first row goes, so neither Commit nor End
	// can take the change for finished while rows still wait here.
	t.open[stream] += len(msgs)
	t.unacked[c] = struct{}{}
	t.mu.Unlock()
	for i, h := range msgs {
		h.change = c
		select {
		case t.out <- h:
		case <-ctx.Done():
			t.abandon(c, len(msgs)-i)
			return nil
		case <-t.quit:
			t.abandon(c, len(msgs)-i)
			return nil
		}
	}
	return nil
}

// abandon gives up the change's rows not handed over: they will never be
// acknowledged, so End must not wait for them, and the stream's progress
// must stay before the change, so the next reader reads all of it again.
func (t *tracker) abandon(c *change, notSent int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open[c.stream] -= notSent
	t.stalled[c.stream] = true
	t.cond.Broadcast()
}

// Next implements outbox.Cursor.
func (t *tracker) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	select {
	case <-ctx.Done():
		return nil, nil
	case h := <-t.out:
		return t.take(h, max), nil
	}
}

// take returns first and what else is already waiting, up to max, without
// blocking. Positions are numbered here, in the order the relay receives
// them, because Commit(pos) means everything returned up to pos: numbered
// by the senders, a later row could overtake an earlier one in the
// channel and be committed over it.
func (t *tracker) take(first handover, max int) []outbox.Record {
	hs := []handover{first}
fill:
	for len(hs) < max {
		select {
		case h := <-t.out:
			hs = append(hs, h)
		default:
			break fill
		}
	}
	recs := make([]outbox.Record, len(hs))
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, h := range hs {
		t.seq++
		t.pending = append(t.pending, received{seq: t.seq, change: h.change})
		recs[i] = outbox.Record{Message: h.m, Err: h.err, Position: outbox.Position(strconv.FormatUint(t.seq, 10))}
	}
	return recs
}

// Commit implements outbox.Cursor: every record up to pos was acknowledged,
// so each stream's progress moves to its last change whose rows were all
// acknowledged.
func (t *tracker) Commit(ctx context.Context, pos outbox.Position) error {
	upTo, err := strconv.ParseUint(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("scylla: bad CDC position %q", pos)
	}
	t.mu.Lock()
	// A stream's changes are handed over one after another and commits
	// are contiguous, so the last change finished here is its newest
	// finished one.
	finished := map[string]*change{}
	n := 0
	for n < len(t.pending) && t.pending[n].seq <= upTo {
		c := t.pending[n].change
		c.left--
		t.open[c.stream]--
		if c.left == 0 {
			delete(t.unacked, c)
			finished[c.stream] = c
			t.raise(c.stream, c.time)
		}
		n++
	}
	t.pending = t.pending[n:]
	t.cond.Broadcast()
	for stream, c := range finished {
		t.unsaved[stream] = c
	}
	due := t.due(false)
	t.mu.Unlock()
	return t.save(ctx, due)
}

// due takes the unsaved changes whose stream's progress was written at
// least progressEvery ago (all of them when all is set); t.mu is held.
// A stream whose changes keep being acknowledged costs one conditional
// write per interval, not one per commit; a crash re-reads at most that
// interval's worth of changes.
func (t *tracker) due(all bool) map[string]*change {
	now := t.now()
	out := map[string]*change{}
	for stream, c := range t.unsaved {
		if all || now.Sub(t.marked[stream]) >= t.progressEvery {
			out[stream] = c
			t.marked[stream] = now
			delete(t.unsaved, stream)
		}
	}
	return out
}

// save writes each stream's progress to its change.
func (t *tracker) save(ctx context.Context, changes map[string]*change) error {
	var errs []error
	for stream, c := range changes {
		if err := c.reporter.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: c.time}); err != nil {
			errs = append(errs, fmt.Errorf("scylla: progress of stream %x: %w", stream, err))
		}
	}
	return errors.Join(errs...)
}

// saved records a stream's progress as the library loaded it.
func (t *tracker) saved(stream string, last gocql.UUID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.raise(stream, last)
}

// raise moves a stream's floor up to at; t.mu is held.
func (t *tracker) raise(stream string, at gocql.UUID) {
	if scyllacdc.CompareTimeUUID(at, t.floor[stream]) > 0 {
		t.floor[stream] = at
	}
}

// idle moves an idle stream's progress to at, the end of a read that
// found no change in the stream's group, when nothing of the stream is
// unacknowledged: every change of it up to at was then acknowledged. So
// a restart does not read the stream again from its last event (or from
// the generation's start, which may be a day of log back). Failures are
// logged, never returned: the next empty read tries again.
func (t *tracker) idle(ctx context.Context, stream string, at gocql.UUID, reporter progressMarker) {
	t.mu.Lock()
	now := t.now()
	due := !t.closed && !t.stalled[stream] && t.open[stream] == 0 && now.Sub(t.idleSaved[stream]) >= t.idleEvery &&
		scyllacdc.CompareTimeUUID(at, t.floor[stream]) > 0
	if due {
		t.idleSaved[stream] = now
		t.floor[stream] = at
		delete(t.unsaved, stream) // at is past it
	}
	t.mu.Unlock()
	if !due {
		return
	}
	if err := reporter.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: at}); err != nil {
		t.log.Warn("CDC progress of an idle stream not saved", "stream", fmt.Sprintf("%x", stream), "err", err)
	}
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

// errStopping: the cursor is closing, so consumers were released without
// their rows being acknowledged.
var errStopping = errors.New("the CDC cursor is closing")

// mayStartGeneration reports whether the library may save a new
// generation: only while no row read is unacknowledged (consumers of the
// previous one end only then) and the cursor is not closing (which
// releases them regardless).
func (t *tracker) mayStartGeneration() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errStopping
	}
	for stream, n := range t.open {
		if n > 0 {
			return fmt.Errorf("stream %x has %d unacknowledged rows", stream, n)
		}
	}
	return nil
}

// Close implements outbox.Cursor. It writes the progress not written yet,
// so a graceful restart does not read it again.
func (t *tracker) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.quit)
	}
	t.cond.Broadcast()
	last := t.due(true)
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.save(ctx, last); err != nil {
		t.log.Warn("CDC progress not saved on close; the next start reads those changes again", "err", err)
	}
	return nil
}

// Undecodable counts rows that could not be decoded and were handed over
// to be dead-lettered.
func (t *tracker) Undecodable() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.undecodable
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

var _ scyllacdc.ChangeOrEmptyNotificationConsumer = (*consumer)(nil)

// Empty is the library's notice that a read of the stream's group up to
// at found nothing.
func (c *consumer) Empty(ctx context.Context, at gocql.UUID) error {
	c.t.idle(ctx, c.stream, at, c.reporter)
	return nil
}

// End waits until the stream's events were acknowledged: only then may
// the library start the next generation.
func (c *consumer) End() error {
	c.t.waitAcknowledged(c.stream)
	return nil
}
