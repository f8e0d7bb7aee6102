package scylla

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/outbox"
)

// fakeRow stands in for scylla-cdc-go's ChangeRow, with the value
// representation the library documents: scalars as pointers, maps flat.
type fakeRow struct {
	op     scyllacdc.OperationType
	seq    int32
	values map[string]any
}

func (r fakeRow) GetOperation() scyllacdc.OperationType { return r.op }
func (r fakeRow) GetSeqNo() int32                       { return r.seq }
func (r fakeRow) GetRawMapData() map[string]any         { return r.values }
func (r fakeRow) GetValue(c string) (any, bool) {
	v, ok := r.values[c]
	return v, ok
}

func ptr[T any](v T) *T { return &v }

func insertRow(t *testing.T, agg string, seq int64) (fakeRow, outbox.Message) {
	m, err := outbox.NewMessage("order", agg, "OrderUpdated", seq, map[string]int64{"v": seq})
	if err != nil {
		t.Fatal(err)
	}
	m.Headers = map[string]string{outbox.HeaderTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	id := gocql.UUID(m.ID)
	return fakeRow{op: scyllacdc.Insert, values: map[string]any{
		"aggregatetype": ptr(m.AggregateType), "aggregateid": ptr(m.AggregateID), "type": ptr(m.Type),
		"id": &id, "sequence": ptr(m.Sequence), "payload": ptr(string(m.Payload)),
		"headers": m.Headers, "timestamp": ptr(m.Timestamp.UnixMicro()), "event_time": ptr(eventTime(m)),
	}}, m
}

func TestDecodeEveryColumnAndIgnoreNonInserts(t *testing.T) {
	row, want := insertRow(t, "o1", 3)
	got, ok, err := decodeRow(row)
	if !ok || err != nil {
		t.Fatalf("insert: ok=%v err=%v", ok, err)
	}
	if got.ID != want.ID || got.AggregateID != "o1" || got.Type != want.Type || got.Sequence != 3 ||
		string(got.Payload) != string(want.Payload) || !got.Timestamp.Equal(want.Timestamp) ||
		got.Headers[outbox.HeaderTraceParent] != want.Headers[outbox.HeaderTraceParent] {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	for _, op := range []scyllacdc.OperationType{scyllacdc.PreImage, scyllacdc.PostImage, scyllacdc.Update, scyllacdc.RowDelete, scyllacdc.PartitionDelete, scyllacdc.RangeDeleteStartInclusive} {
		row.op = op
		if _, ok, err := decodeRow(row); ok || err != nil {
			t.Errorf("%s row: ok=%v err=%v, want ignored", op, ok, err)
		}
	}
	for _, tc := range []struct {
		col string
		val any
	}{
		{"aggregateid", (*string)(nil)},
		{"id", ptr("not a uuid")},
		{"sequence", ptr(int32(1))},
		{"timestamp", ptr("yesterday")},
		{"headers", []string{"x"}},
		{"payload", ptr("{not json")},
	} {
		bad, _ := insertRow(t, "o1", 1)
		bad.values[tc.col] = tc.val
		if _, ok, err := decodeRow(bad); !ok || err == nil {
			t.Errorf("malformed %s (%T): ok=%v err=%v, want an error", tc.col, tc.val, ok, err)
		}
	}
	noHeaders, _ := insertRow(t, "o1", 1)
	delete(noHeaders.values, "headers")
	if m, _, err := decodeRow(noHeaders); err != nil || m.Headers != nil {
		t.Fatalf("row without headers: %v %v", m.Headers, err)
	}
}

// fakeReporter records the progress marked for one stream.
type fakeReporter struct {
	mu    sync.Mutex
	marks []gocql.UUID
}

func (r *fakeReporter) MarkProgress(_ context.Context, p scyllacdc.Progress) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, p.LastProcessedRecordTime)
	return nil
}

func (r *fakeReporter) last() (gocql.UUID, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.marks) == 0 {
		return gocql.UUID{}, 0
	}
	return r.marks[len(r.marks)-1], len(r.marks)
}

func TestTrackerKeepsStreamOrderAndReportsProgressOnlyAfterAcks(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(64, nil)
	repA, repB := &fakeReporter{}, &fakeReporter{}
	times := []gocql.UUID{gocql.TimeUUID(), gocql.TimeUUID(), gocql.TimeUUID()}
	var wantA []outbox.Message
	for i, at := range times {
		rowA, mA := insertRow(t, "a", int64(i+1))
		rowB, _ := insertRow(t, "b", int64(i+1))
		wantA = append(wantA, mA)
		// A change may carry pre-images and rows that are not events.
		pre := rowA
		pre.op = scyllacdc.PreImage
		if err := tr.consume(ctx, "streamA", at, []changeRow{pre, rowA}, repA); err != nil {
			t.Fatal(err)
		}
		if err := tr.consume(ctx, "streamB", at, []changeRow{rowB}, repB); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := tr.Next(ctx, 100)
	if err != nil || len(recs) != 6 {
		t.Fatalf("next: %d records, %v", len(recs), err)
	}
	var gotA []outbox.Message
	for _, r := range recs {
		if r.Message.AggregateID == "a" {
			gotA = append(gotA, r.Message)
		}
	}
	for i := range wantA {
		if gotA[i].ID != wantA[i].ID {
			t.Fatalf("stream A out of order at %d", i)
		}
	}
	if _, n := repA.last(); n != 0 {
		t.Fatal("progress reported before any acknowledgement")
	}
	// The relay acknowledged the first three records (A1, B1, A2).
	if err := tr.Commit(ctx, recs[2].Position); err != nil {
		t.Fatal(err)
	}
	if last, _ := repA.last(); last != times[1] {
		t.Fatalf("stream A progress %v, want the second change's time", last)
	}
	if last, _ := repB.last(); last != times[0] {
		t.Fatalf("stream B progress %v, want the first change's time only", last)
	}
	if err := tr.Commit(ctx, recs[5].Position); err != nil {
		t.Fatal(err)
	}
	if last, _ := repB.last(); last != times[2] {
		t.Fatal("stream B progress not moved to its last acknowledged change")
	}
	if err := tr.Commit(ctx, "x"); err == nil {
		t.Fatal("a malformed position was accepted")
	}
}

// A LOGGED BATCH writing several rows of one aggregate is one CDC change
// (one cdc$time) of several rows, and the library resumes after the
// reported time: progress may reach a change only once every row of it
// was acknowledged, including rows consume has not handed over yet.
func TestProgressReachesAChangeOnlyWhenAllItsRowsAreAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		tr := newTracker(1, nil) // one slot: consume blocks inside the batch
		rep := &fakeReporter{}
		single, batched := gocql.UUIDFromTime(time.Now()), gocql.UUIDFromTime(time.Now().Add(time.Millisecond))
		one, _ := insertRow(t, "a", 1)
		var batch []changeRow
		for seq := int64(2); seq <= 4; seq++ {
			r, _ := insertRow(t, "a", seq)
			batch = append(batch, r)
		}
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			tr.consume(ctx, "s", single, []changeRow{one}, rep)
			tr.consume(ctx, "s", batched, batch, rep)
		}()
		ack := func(want gocql.UUID, what string) {
			t.Helper()
			synctest.Wait() // consume has handed over what it can and blocks
			recs, err := tr.Next(ctx, 1)
			if err != nil || len(recs) != 1 {
				t.Fatalf("%s: next: %d records, %v", what, len(recs), err)
			}
			if err := tr.Commit(ctx, recs[0].Position); err != nil {
				t.Fatal(err)
			}
			if got, _ := rep.last(); got != want {
				t.Fatalf("%s: progress at %v, want %v", what, got.Time(), want.Time())
			}
		}
		ack(single, "the single-row change acknowledged")
		ack(single, "1 of the batch's 3 rows acknowledged")
		ack(single, "2 of the batch's 3 rows acknowledged")
		ack(batched, "the whole batch acknowledged")
		<-consumed
	})
}

// When the reader stops while consume is blocked inside a change, the
// rest of the change is never handed over: progress must stay before it
// (it is read again after the restart), later changes of the stream must
// not be handed over past it, and End must not wait for rows that will
// never come.
func TestAChangeLeftPartWayIsNeverPassed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := newTracker(1, nil)
		rep := &fakeReporter{}
		readerCtx, stop := context.WithCancel(t.Context())
		var batch []changeRow
		for seq := int64(1); seq <= 3; seq++ {
			r, _ := insertRow(t, "a", seq)
			batch = append(batch, r)
		}
		later, _ := insertRow(t, "a", 4)
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			tr.consume(readerCtx, "s", gocql.UUIDFromTime(time.Now()), batch, rep)
			tr.consume(readerCtx, "s", gocql.UUIDFromTime(time.Now().Add(time.Millisecond)), []changeRow{later}, rep)
		}()
		synctest.Wait()
		stop() // another stream failed: the library cancels every consumer
		<-consumed
		ended := make(chan struct{})
		go func() { (&consumer{t: tr, stream: "s", reporter: rep}).End(); close(ended) }()
		synctest.Wait()
		select {
		case <-ended:
			t.Fatal("End returned while a handed-over row was unacknowledged")
		default:
		}
		recs, err := tr.Next(t.Context(), 10)
		if err != nil || len(recs) != 1 || recs[0].Message.Sequence != 1 {
			t.Fatalf("handed over %d records (%v), want the batch's first row only", len(recs), err)
		}
		if err := tr.Commit(t.Context(), recs[0].Position); err != nil {
			t.Fatal(err)
		}
		<-ended
		if _, n := rep.last(); n != 0 {
			t.Fatal("progress reported for a change whose rows were not all acknowledged")
		}
		if len(tr.out) != 0 {
			t.Fatal("a later change was handed over past an unfinished one")
		}
	})
}

// A row the consumer cannot decode is neither an error for the library
// (which would stop every stream) nor dropped: it goes to the relay as a
// record whose Err is set, carrying what could be read and the raw
// columns, so the relay dead-letters it and parks its aggregate; its
// position counts for progress like any other row's.
func TestConsumerHandsAnUndecodableRowOverForTheDeadLetterStore(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(8, nil)
	rep := &fakeReporter{}
	bad, badMsg := insertRow(t, "a", 1)
	bad.values["payload"] = ptr("not json")
	bad.values["blob"] = []byte{0xde, 0xad}
	noID, _ := insertRow(t, "a", 2)
	noID.values["id"] = ptr("garbage")
	nothing := fakeRow{op: scyllacdc.Insert, seq: 2, values: map[string]any{"payload": ptr("x")}}
	good, m := insertRow(t, "a", 3)
	at := gocql.TimeUUID()
	rows := []changeRow{bad, noID, nothing, good}
	if err := tr.consume(ctx, "stream-1", at, rows, rep); err != nil {
		t.Fatalf("consume returned %v: the library would stop every stream", err)
	}
	recs, _ := tr.Next(ctx, 10)
	if len(recs) != 4 || recs[3].Err != nil || recs[3].Message.ID != m.ID {
		t.Fatalf("handed over %d records, want the 3 undecodable rows then the good one", len(recs))
	}
	for i, r := range recs[:3] {
		if r.Err == nil {
			t.Fatalf("record %d: no Err for an undecodable row", i)
		}
		if err := r.Message.Validate(); err != nil {
			t.Fatalf("record %d: the dead letter could not be stored: %v", i, err)
		}
		var raw struct {
			Stream  string         `json:"cdc$stream_id"`
			Time    string         `json:"cdc$time"`
			Columns map[string]any `json:"columns"`
		}
		if err := json.Unmarshal(r.Message.Payload, &raw); err != nil || raw.Time != at.String() || raw.Stream == "" || raw.Columns["payload"] == nil {
			t.Fatalf("record %d: payload %s (%v), want the raw columns with the stream and cdc$time", i, r.Message.Payload, err)
		}
	}
	if got := recs[0].Message; got.ID != badMsg.ID || got.Key() != badMsg.Key() || got.Sequence != 1 || !strings.Contains(string(got.Payload), `"blob":"0xdead"`) {
		t.Fatalf("a row with a bad payload: %+v, want its own id, aggregate and sequence, and the blob rendered", got)
	}
	if got := recs[1].Message; got.Key() != badMsg.Key() || got.ID == badMsg.ID || got.ID == [16]byte{} {
		t.Fatalf("a row with a bad id: %+v, want its aggregate and an id of its own", got)
	}
	if got := recs[2].Message; got.AggregateID == "" || !strings.Contains(got.AggregateID, at.String()) {
		t.Fatalf("a row with no aggregate: %+v, want a key made of its stream and cdc$time", got)
	}
	// Read again after a restart, the same rows get the same ids, so the
	// dead-letter store keeps one entry for each.
	again := newTracker(8, nil)
	again.consume(ctx, "stream-1", at, rows, rep)
	recs2, _ := again.Next(ctx, 10)
	for i := range 3 {
		if recs2[i].Message.ID != recs[i].Message.ID || recs2[i].Message.Key() != recs[i].Message.Key() {
			t.Fatalf("record %d: id %s, then %s after a restart", i, recs[i].Message.ID, recs2[i].Message.ID)
		}
	}
	if tr.Undecodable() != 3 {
		t.Fatalf("Undecodable() = %d, want 3", tr.Undecodable())
	}
	if err := tr.Commit(ctx, recs[2].Position); err != nil {
		t.Fatal(err)
	}
	if _, n := rep.last(); n != 0 {
		t.Fatal("progress reached the change before its last row was acknowledged")
	}
	if err := tr.Commit(ctx, recs[3].Position); err != nil {
		t.Fatal(err)
	}
	if last, _ := rep.last(); last != at {
		t.Fatal("progress did not reach the change once all its rows, the undecodable ones included, were acknowledged")
	}
}

func TestConsumerFactoryNeverFails(t *testing.T) {
	tr := newTracker(8, nil)
	f := consumerFactory{tr}
	c, err := f.CreateChangeConsumer(t.Context(), scyllacdc.CreateChangeConsumerInput{StreamID: scyllacdc.StreamID("s")})
	if err != nil || c == nil {
		t.Fatal("the factory must always return a consumer")
	}
}

func TestEndWaitsForTheStreamsAcknowledgements(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := newTracker(8, nil)
		row, _ := insertRow(t, "a", 1)
		tr.consume(t.Context(), "s", gocql.TimeUUID(), []changeRow{row}, &fakeReporter{})
		c := &consumer{t: tr, stream: "s", reporter: &fakeReporter{}}
		ended := make(chan struct{})
		go func() { c.End(); close(ended) }()
		synctest.Wait()
		select {
		case <-ended:
			t.Fatal("End returned while the stream had an unacknowledged event: the next generation could start past it")
		default:
		}
		recs, _ := tr.Next(t.Context(), 10)
		tr.Commit(t.Context(), recs[0].Position)
		<-ended // a deadlock here fails the bubble
	})
}

// memLease is the lease table with lightweight-transaction semantics.
type memLease struct {
	mu  sync.Mutex
	row map[string]leaseRecord
}

func (m *memLease) read(_ context.Context, name string) (leaseRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.row[name]
	return r, ok, nil
}
func (m *memLease) create(_ context.Context, name string, rec leaseRecord) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.row[name]; ok {
		return false, nil
	}
	m.row[name] = rec
	return true, nil
}
func (m *memLease) take(_ context.Context, name string, prev, next leaseRecord, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.row[name]
	if cur.Epoch != prev.Epoch || !cur.Expires.Before(now) {
		return false, nil
	}
	m.row[name] = next
	return true, nil
}
func (m *memLease) renew(_ context.Context, name string, rec leaseRecord) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.row[name]
	if cur.Owner != rec.Owner || cur.Epoch != rec.Epoch {
		return false, nil
	}
	m.row[name] = rec
	return true, nil
}

// memProgress refuses a write whose epoch is older than the stored one.
type memProgress struct {
	mu         sync.Mutex
	epoch      map[string]int64
	last       map[string]gocql.UUID
	gen, start time.Time
}

func (m *memProgress) generation(context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen, nil
}
func (m *memProgress) setGeneration(_ context.Context, gen time.Time, _ int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen = gen
	return true, nil
}
func (m *memProgress) startTime(context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.start, nil
}
func (m *memProgress) setStartTime(_ context.Context, at time.Time, _ int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.start = at
	return true, nil
}
func (m *memProgress) get(_ context.Context, _ time.Time, _, stream string) (gocql.UUID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[stream], nil
}
func (m *memProgress) save(_ context.Context, _ time.Time, _, stream string, last gocql.UUID, epoch int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch < m.epoch[stream] {
		return false, nil
	}
	m.epoch[stream], m.last[stream] = epoch, last
	return true, nil
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLeaseFencesAStaleRelay(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	leases := &memLease{row: map[string]leaseRecord{}}
	store := &memProgress{epoch: map[string]int64{}, last: map[string]gocql.UUID{}}
	a := newLease(leases, "outbox_messages", "relay-a", 10*time.Second, clock.now)
	b := newLease(leases, "outbox_messages", "relay-b", 10*time.Second, clock.now)
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second relay acquired a held lease: %v", err)
	}
	pa := &fencedProgress{store: store, lease: a}
	pb := &fencedProgress{store: store, lease: b}
	if err := pa.SaveProgress(ctx, time.Time{}, "outbox_messages", scyllacdc.StreamID("s"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()}); err != nil {
		t.Fatal(err)
	}
	clock.advance(5 * time.Second)
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	// Relay A stalls (a long GC pause, a partition) past its lease.
	clock.advance(11 * time.Second)
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("standby did not take over an expired lease: %v", err)
	}
	if e, _ := b.Epoch(); e != 2 {
		t.Fatalf("takeover epoch %d, want 2", e)
	}
	newer := gocql.TimeUUID()
	if err := pb.SaveProgress(ctx, time.Time{}, "outbox_messages", scyllacdc.StreamID("s"), scyllacdc.Progress{LastProcessedRecordTime: newer}); err != nil {
		t.Fatal(err)
	}
	// A wakes up: its lease is gone and its progress writes are refused.
	if err := a.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale relay renewed: %v", err)
	}
	if err := pa.SaveProgress(ctx, time.Time{}, "outbox_messages", scyllacdc.StreamID("s"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale relay's progress write: %v, want ErrLeaseLost", err)
	}
	// Even a stale holder that still believes its lease is valid is fenced
	// by the stored epoch.
	stale := &fencedProgress{store: store, lease: staleLease(leases, clock, 1)}
	if err := stale.SaveProgress(ctx, time.Time{}, "outbox_messages", scyllacdc.StreamID("s"), scyllacdc.Progress{}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("epoch-1 write over epoch-2 progress: %v", err)
	}
	if p, _ := pb.GetProgress(ctx, time.Time{}, "outbox_messages", scyllacdc.StreamID("s")); p.LastProcessedRecordTime != newer {
		t.Fatal("the stale relay overwrote the new owner's progress")
	}
}

func TestSchemaAndEventKeys(t *testing.T) {
	stmts, err := Schema("shop", SchemaConfig{})
	if err != nil || len(stmts) != 12 {
		t.Fatalf("schema: %d statements, %v", len(stmts), err)
	}
	var outboxTable string
	for _, s := range stmts {
		if containsAll(s, "outbox_messages (") {
			outboxTable = s
		}
	}
	if !containsAll(outboxTable, "PRIMARY KEY ((aggregatetype, aggregateid), sequence, event_time)", "cdc = {'enabled': true") {
		t.Fatalf("outbox table must be partitioned by aggregate with CDC on:\n%s", outboxTable)
	}
	plain, _ := Schema("shop", SchemaConfig{WithoutCDC: true, Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"})
	if containsAll(plain[2], "cdc") || !containsAll(plain[0], "SimpleStrategy") {
		t.Fatal("WithoutCDC and Replication not applied")
	}
	if _, err := Schema("Bad-Name", SchemaConfig{}); err == nil {
		t.Fatal("an invalid keyspace name was accepted")
	}
	// The same event always maps to the same clustering key (a retried
	// batch overwrites), and keys sort by event time.
	_, m1 := insertRow(t, "a", 1)
	_, m2 := insertRow(t, "a", 2)
	if eventTime(m1) != eventTime(m1) || eventTime(m1).Time().After(eventTime(m2).Time()) {
		t.Fatal("event keys are not stable or not time-ordered")
	}
	if eventTime(m1).Version() != 1 {
		t.Fatalf("event key is a version %d UUID, want a timeuuid", eventTime(m1).Version())
	}
}

// An aggregate's rows must cluster in sequence order whatever their
// times: within one CDC change (one LOGGED BATCH) a partition's rows come
// in clustering order. Events created back to back often share a
// microsecond, and another instance's clock may be behind.
func TestAnAggregatesRowsClusterInSequenceOrder(t *testing.T) {
	key := clusteringKeyOf(t)
	for i := range 3000 {
		first, err := outbox.NewMessage("order", "o1", "OrderUpdated", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		second, err := outbox.NewMessage("order", "o1", "OrderUpdated", 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 1:
			second.Timestamp = first.Timestamp
		case 2: // written by an instance whose clock is behind
			second.Timestamp = first.Timestamp.Add(-time.Second)
		}
		if compareCQL(t, key(first), key(second)) >= 0 {
			t.Fatalf("pair %d: sequence 2 (at %s, id %s) clusters before sequence 1 (at %s, id %s)",
				i, second.Timestamp, second.ID, first.Timestamp, first.ID)
		}
	}
	// Equal sequences (callers that leave it 0) still get distinct rows,
	// and the same event always the same row, so a retried batch rewrites.
	a, _ := outbox.NewMessage("order", "o1", "OrderUpdated", 0, nil)
	b, _ := outbox.NewMessage("order", "o1", "OrderUpdated", 0, nil)
	b.Timestamp = a.Timestamp
	if compareCQL(t, key(a), key(b)) == 0 || compareCQL(t, key(a), key(a)) != 0 {
		t.Fatal("equal sequences share a key, or one event has two")
	}
}

// clusteringKeyOf reads the outbox table's clustering columns from the
// schema and returns a function giving a message's values for them, as
// the insert binds them.
func clusteringKeyOf(t *testing.T) func(outbox.Message) []any {
	t.Helper()
	stmts, err := Schema("shop", SchemaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var clustering []string
	pk := regexp.MustCompile(`outbox_messages \([\s\S]*PRIMARY KEY \(\([^)]*\),\s*([^)]*)\)`)
	for _, st := range stmts {
		if m := pk.FindStringSubmatch(st); m != nil {
			for _, c := range strings.Split(m[1], ",") {
				clustering = append(clustering, strings.TrimSpace(c))
			}
		}
	}
	insert := (&Store{keyspace: "shop"}).outboxInsert()
	var columns []string
	for _, c := range strings.Split(insert[strings.Index(insert, "(")+1:strings.Index(insert, ")")], ",") {
		columns = append(columns, strings.TrimSpace(c))
	}
	if len(clustering) == 0 || len(columns) != len(outboxArgs(outbox.Message{})) {
		t.Fatalf("cannot read the clustering columns %v or the insert's columns %v", clustering, columns)
	}
	return func(m outbox.Message) []any {
		args := outboxArgs(m)
		var key []any
		for _, c := range clustering {
			i := slices.Index(columns, c)
			if i < 0 {
				t.Fatalf("clustering column %s is not inserted", c)
			}
			key = append(key, args[i])
		}
		return key
	}
}

// compareCQL orders two clustering keys as Cassandra and ScyllaDB do:
// bigint as signed integers, timeuuid by time, then by signed bytes.
func compareCQL(t *testing.T, a, b []any) int {
	t.Helper()
	for i := range a {
		var c int
		switch x := a[i].(type) {
		case int64:
			c = cmp.Compare(x, b[i].(int64))
		case gocql.UUID:
			c = scyllacdc.CompareTimeUUID(x, b[i].(gocql.UUID))
		default:
			t.Fatalf("no CQL order for %T", x)
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

var _ outbox.Cursor = (*tracker)(nil)

func TestLagIsTheOldestUnacknowledgedChange(t *testing.T) {
	src := (&Store{}).CDC(CDCConfig{})
	written := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := written.Add(3 * time.Hour)
	src.now = func() time.Time { return clock }
	if lag, ttl := src.Lag(); lag != 0 || ttl != 24*time.Hour {
		t.Fatalf("before any read: lag %s, ttl %s", lag, ttl)
	}
	tr := newTracker(8, nil)
	src.current.Store(tr)
	older, _ := insertRow(t, "a", 1)
	newer, _ := insertRow(t, "b", 1)
	tr.consume(t.Context(), "s2", gocql.UUIDFromTime(written.Add(time.Hour)), []changeRow{newer}, &fakeReporter{})
	tr.consume(t.Context(), "s1", gocql.UUIDFromTime(written), []changeRow{older}, &fakeReporter{})
	if lag, _ := src.Lag(); lag != 3*time.Hour {
		t.Fatalf("lag %s, want 3h (the older change, though read second)", lag)
	}
	recs, _ := tr.Next(t.Context(), 10)
	if err := tr.Commit(t.Context(), recs[len(recs)-1].Position); err != nil {
		t.Fatal(err)
	}
	if lag, _ := src.Lag(); lag != 0 {
		t.Fatalf("lag after every change was acknowledged: %s", lag)
	}
}

// An idle stream's progress follows the library's empty reads, so a
// restart does not read its whole group again from the stream's last
// event: spaced out, only while nothing of it is unacknowledged, and
// never back below what was saved or reported (a group reads from its
// least advanced stream, so an empty read can end before a stream's own
// progress).
func TestIdleStreamProgressMovesOnButNeverBack(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(8, nil)
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	tr.now, tr.idleEvery = clock.now, time.Minute
	rep := &fakeReporter{}
	times := map[int64]gocql.UUID{}
	at := func(s int64) gocql.UUID {
		if _, ok := times[s]; !ok {
			times[s] = gocql.UUIDFromTime(time.Unix(1_700_000_000+s, 0))
		}
		return times[s]
	}
	c := &consumer{t: tr, stream: "s", reporter: rep}
	marked := func(want gocql.UUID, n int, what string) {
		t.Helper()
		if got, count := rep.last(); got != want || count != n {
			t.Fatalf("%s: %d marks, the last at %v; want %d, the last at %v", what, count, got.Time(), n, want.Time())
		}
	}

	tr.saved("s", at(50))
	c.Empty(ctx, at(40))
	marked(gocql.UUID{}, 0, "an empty read ending before the saved progress")
	c.Empty(ctx, at(60))
	marked(at(60), 1, "an empty read past it")
	c.Empty(ctx, at(61))
	marked(at(60), 1, "another within a minute")

	clock.advance(time.Minute)
	row, _ := insertRow(t, "a", 1)
	tr.consume(ctx, "s", at(62), []changeRow{row}, rep)
	c.Empty(ctx, at(63))
	marked(at(60), 1, "an empty read while a change is unacknowledged")
	recs, _ := tr.Next(ctx, 10)
	if err := tr.Commit(ctx, recs[0].Position); err != nil {
		t.Fatal(err)
	}
	marked(at(62), 2, "the change acknowledged")
	c.Empty(ctx, at(64))
	marked(at(64), 3, "an empty read after it")
}

// recordingProgress is a progress store that remembers the generations
// started, whatever the context (CQL would fail a cancelled one, but
// nothing should depend on that).
type recordingProgress struct {
	memProgress
	mu      sync.Mutex
	started []time.Time
}

func (r *recordingProgress) setGeneration(_ context.Context, gen time.Time, _ int64) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, gen)
	return true, nil
}

func heldLease(t *testing.T) *Lease {
	l := newLease(&memLease{row: map[string]leaseRecord{}}, "t", "me", time.Hour, nil)
	if err := l.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	return l
}

// At a generation boundary the library ends the old generation's
// consumers (End waits for their acknowledgements) and then saves the
// next generation. Closing the cursor must not let that save happen while
// an old-generation row is unacknowledged: the reader is cancelled and
// stopped before the waiting End calls are released.
func TestCloseNeverLetsTheNextGenerationStartPastUnacknowledgedRows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := newTracker(8, nil)
		store := &recordingProgress{}
		// No tracker check here: this is about the order Close works in.
		progress := &fencedProgress{store: store, lease: heldLease(t)}
		row, _ := insertRow(t, "a", 1)
		tr.consume(t.Context(), "s", gocql.TimeUUID(), []changeRow{row}, &fakeReporter{})
		if recs, _ := tr.Next(t.Context(), 10); len(recs) != 1 { // handed to the relay, never acknowledged
			t.Fatalf("handed over %d rows", len(recs))
		}
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		next := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		go func() { // what the library does at the boundary
			defer close(done)
			(&consumer{t: tr, stream: "s"}).End()
			progress.StartGeneration(runCtx, next)
		}()
		synctest.Wait()
		// stop lets every goroutine run as far as it can, as the
		// library's own would while Close goes on.
		cur := newCursor(tr, heldLease(t), func() { synctest.Wait() }, cancel)
		cur.done = done
		cur.Close()
		if len(store.started) != 0 {
			t.Fatalf("generation %v saved while a row of the old one was unacknowledged", store.started)
		}
	})
}

// The next generation is never saved while a row read is unacknowledged,
// nor once the cursor is closing, whatever the library does.
func TestStartGenerationRefusedWhileRowsAreUnacknowledged(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(8, nil)
	store := &recordingProgress{}
	progress := &fencedProgress{store: store, lease: heldLease(t), tracker: tr}
	gen := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if err := progress.StartGeneration(ctx, gen); err != nil {
		t.Fatalf("the first generation: %v", err)
	}
	row, _ := insertRow(t, "a", 1)
	tr.consume(ctx, "s", gocql.TimeUUID(), []changeRow{row}, &fakeReporter{})
	recs, _ := tr.Next(ctx, 10)
	if err := progress.StartGeneration(ctx, gen.Add(time.Hour)); err == nil {
		t.Fatal("the next generation started while a row was unacknowledged")
	}
	if err := tr.Commit(ctx, recs[0].Position); err != nil {
		t.Fatal(err)
	}
	if err := progress.StartGeneration(ctx, gen.Add(time.Hour)); err != nil {
		t.Fatalf("once acknowledged: %v", err)
	}
	tr.Close()
	if err := progress.StartGeneration(ctx, gen.Add(2*time.Hour)); err == nil {
		t.Fatal("a generation started after the cursor closed")
	}
	if len(store.started) != 2 {
		t.Fatalf("saved %v, want the first two only", store.started)
	}
}

// Whatever a foreign writer put in a row, its dead letter is a valid
// message with a JSON payload.
func FuzzUndecodableRowIsAValidDeadLetter(f *testing.F) {
	f.Add("order", "a", "T", "not json", []byte{0xff}, int64(-3), 1.5)
	f.Add("", "", "", "", []byte(nil), int64(0), 0.0)
	f.Fuzz(func(t *testing.T, aggType, aggID, typ, payload string, blob []byte, seq int64, num float64) {
		row := fakeRow{op: scyllacdc.Insert, values: map[string]any{
			"aggregatetype": &aggType, "aggregateid": &aggID, "type": &typ, "payload": &payload,
			"sequence": &seq, "blob": blob, "num": &num, "list": []*string{&payload, nil}, "map": map[int]string{1: typ},
		}}
		m, ok, err := decodeRow(row)
		if !ok || err == nil {
			return
		}
		d := undecodable("\x01\x02", gocql.TimeUUID(), row, m, err)
		if verr := d.Validate(); verr != nil {
			t.Fatalf("dead letter %+v: %v", d, verr)
		}
	})
}

// logRecords keeps what a logger wrote, as level and text.
type logRecords struct {
	mu  sync.Mutex
	out []string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.out = append(l.out, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func (l *logRecords) find(level slog.Level, parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.out {
		if strings.HasPrefix(line, level.String()+" ") && containsAll(line, parts...) {
			return true
		}
	}
	return false
}

// A relay's first start on a table reads from the oldest change the CDC
// log holds, or from an explicit point; either way the point is saved
// (the library's application start time), so an interrupted first start
// does not choose again, and it is logged, with what it passes over. Later
// starts resume from saved progress and say so.
func TestFirstStartReadsFromTheOldestChangeOrAnExplicitPointAndSaysSo(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	oldest := now.Add(-5*time.Hour + 1234*time.Microsecond)
	for _, tc := range []struct {
		name      string
		from      time.Time
		oldest    time.Time // zero: an empty log
		older     int64     // outbox rows written before the start point
		want      time.Time
		wantLog   []string
		wantLevel slog.Level
	}{
		{"from the oldest change", time.Time{}, oldest, 0, oldest.Truncate(time.Millisecond),
			[]string{"first start", "oldest change", "from=2026-11-30T07:00:00.001Z"}, slog.LevelWarn},
		{"rows older than the log", time.Time{}, oldest, 7, oldest.Truncate(time.Millisecond),
			[]string{"first start", "oldest change"}, slog.LevelWarn},
		{"an empty log", time.Time{}, time.Time{}, 0, now.Add(-time.Minute),
			[]string{"first start", "CDC log is empty"}, slog.LevelWarn},
		// Writes in flight as the relay starts may land after the oldest
		// change it sees, with earlier times (their ballots).
		{"a log whose oldest change is seconds old", time.Time{}, now.Add(-2 * time.Second), 0, now.Add(-time.Minute),
			[]string{"first start", "before its oldest change", "in flight", "from=2026-11-30T11:59:00Z", "oldest_change=2026-11-30T11:59:58Z"}, slog.LevelWarn},
		{"from a later point", now.Add(-time.Hour), oldest, 3, now.Add(-time.Hour),
			[]string{"from=2026-11-30T11:00:00Z", "NOT published", "oldest_change=2026-11-30T07:00:00.001234Z"}, slog.LevelError},
		{"from an earlier point", now.Add(-48 * time.Hour), oldest, 0, now.Add(-48 * time.Hour),
			[]string{"from=2026-11-28T12:00:00Z", "older than the oldest change"}, slog.LevelWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logRecords{}
			src := (&Store{}).CDC(CDCConfig{From: tc.from, Logger: slog.New(logs)})
			src.now = func() time.Time { return now }
			src.oldest = func(context.Context) (time.Time, error) { return tc.oldest, nil }
			src.countOlder = func(_ context.Context, before time.Time) (int64, bool, error) {
				if !before.Equal(tc.want) {
					t.Errorf("counted rows before %v, want before the start point %v", before, tc.want)
				}
				return tc.older, true, nil
			}
			store := &memProgress{epoch: map[string]int64{}, last: map[string]gocql.UUID{}}
			if err := src.planStart(t.Context(), store, 1); err != nil {
				t.Fatal(err)
			}
			if !store.start.Equal(tc.want) {
				t.Fatalf("saved start %v, want %v", store.start, tc.want)
			}
			if !logs.find(tc.wantLevel, tc.wantLog...) {
				t.Fatalf("no %s log with %q in %q", tc.wantLevel, tc.wantLog, logs.out)
			}
			if tc.older > 0 && !logs.find(slog.LevelError, "not in the CDC log", "NOT published", fmt.Sprintf("rows=%d", tc.older)) {
				t.Fatalf("the %d older outbox rows were not reported: %q", tc.older, logs.out)
			}
			// An interrupted first start keeps its point: the log has
			// moved on, the choice does not.
			src.oldest = func(context.Context) (time.Time, error) { return now, nil }
			if err := src.planStart(t.Context(), store, 1); err != nil || !store.start.Equal(tc.want) {
				t.Fatalf("second start: %v, start %v, want %v kept", err, store.start, tc.want)
			}
			if !logs.find(slog.LevelInfo, "first start", "saved start point") {
				t.Fatalf("the second start did not say it kept the saved point: %q", logs.out)
			}
		})
	}
	// Once a generation is saved, a start resumes from it and says so.
	logs := &logRecords{}
	src := (&Store{}).CDC(CDCConfig{From: now, Logger: slog.New(logs)})
	src.oldest = func(context.Context) (time.Time, error) {
		t.Fatal("looked for the oldest change on a resume")
		return time.Time{}, nil
	}
	store := &memProgress{epoch: map[string]int64{}, last: map[string]gocql.UUID{}, gen: now.Add(-time.Hour)}
	if err := src.planStart(t.Context(), store, 1); err != nil || !store.start.IsZero() {
		t.Fatalf("resume: %v, start %v", err, store.start)
	}
	if !logs.find(slog.LevelInfo, "resuming", "generation=2026-11-30T11:00:00Z") || !logs.find(slog.LevelWarn, "from=", "ignored") {
		t.Fatalf("resume logs %q", logs.out)
	}
}

// The holder of a lease stops trusting it a quarter of its TTL before a
// standby may take it, so clocks that disagree by less than that never
// let two relays publish as owners at once.
func TestLeaseEndsForItsHolderBeforeAStandbyCanTakeIt(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	leases := &memLease{row: map[string]leaseRecord{}}
	a := newLease(leases, "t", "relay-a", 8*time.Second, clock.now)
	b := newLease(leases, "t", "relay-b", 8*time.Second, clock.now)
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	clock.advance(6*time.Second - time.Millisecond)
	if _, err := a.Epoch(); err != nil {
		t.Fatalf("within three quarters of the TTL: %v", err)
	}
	select {
	case <-a.Lost():
		t.Fatal("Lost closed while the lease was valid")
	default:
	}
	clock.advance(time.Millisecond)
	if _, err := a.Epoch(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("three quarters of the TTL after the last renewal: %v, want ErrLeaseLost", err)
	}
	select {
	case <-a.Lost():
	default:
		t.Fatal("Lost not closed once the lease ran out")
	}
	if err := b.Acquire(ctx); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("the standby took the lease %s before it expired: %v", clock.t, err)
	}
	clock.advance(2*time.Second + time.Millisecond)
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("the standby after the TTL: %v", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the old holder renewed: %v", err)
	}
}

// A cursor whose lease is lost hands out nothing more, even rows already
// waiting, stops its reader and fails, so the relay stops reading and its
// lanes start no further publish; a relay waiting in Next hears of it at
// once. Its commits are refused.
func TestCursorStopsHandingOutRecordsTheMomentItsLeaseIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		clock := &fakeClock{t: time.Now()}
		leases := &memLease{row: map[string]leaseRecord{}}
		lease := newLease(leases, "t", "relay-a", 8*time.Second, clock.now)
		if err := lease.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		tr := newTracker(8, nil)
		stopped := 0
		cur := newCursor(tr, lease, func() { stopped++ }, func() {})
		for seq := range int64(3) {
			row, _ := insertRow(t, "a", seq+1)
			tr.consume(ctx, "s", gocql.TimeUUID(), []changeRow{row}, &fakeReporter{})
		}
		recs, err := cur.Next(ctx, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("with the lease held: %d records, %v", len(recs), err)
		}
		clock.advance(6 * time.Second) // renewals stalled: the lease runs out
		if recs, err := cur.Next(ctx, 10); !errors.Is(err, ErrLeaseLost) || len(recs) != 0 {
			t.Fatalf("after the lease ran out: %d records, %v; want none and ErrLeaseLost", len(recs), err)
		}
		if stopped == 0 {
			t.Fatal("the reader was not stopped")
		}
		if err := cur.Commit(ctx, recs0(t, recs)); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("commit after the lease was lost: %v", err)
		}

		// Taken over while the relay waits in Next for rows.
		clock2 := &fakeClock{t: time.Now()}
		lease2 := newLease(leases, "t2", "relay-a", 8*time.Second, clock2.now)
		if err := lease2.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		cur2 := newCursor(newTracker(8, nil), lease2, func() {}, func() {})
		got := make(chan error, 1)
		go func() {
			for {
				recs, err := cur2.Next(ctx, 10)
				if err != nil || len(recs) > 0 {
					got <- err
					return
				}
			}
		}()
		synctest.Wait()
		leases.mu.Lock()
		leases.row["t2"] = leaseRecord{Owner: "relay-b", Epoch: 2, Expires: clock2.t.Add(time.Minute)}
		leases.mu.Unlock()
		if err := lease2.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew of a lease taken over: %v", err)
		}
		if err := <-got; !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a Next waiting for rows returned %v, want ErrLeaseLost", err)
		}
	})
}

func recs0(t *testing.T, recs []outbox.Record) outbox.Position {
	if len(recs) > 0 {
		return recs[0].Position
	}
	return "1"
}

// A second relay on a table waits as a standby, says so once, and takes
// over once the holder's lease expires.
func TestStandbyWaitsForTheLeaseAndTakesOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		leases := &memLease{row: map[string]leaseRecord{}}
		holder := newLease(leases, "t", "relay-a", 8*time.Second, nil)
		if err := holder.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		logs := &logRecords{}
		standby := newLease(leases, "t", "relay-b", 8*time.Second, nil)
		start := time.Now()
		if err := waitForLease(ctx, standby, slog.New(logs)); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 8*time.Second || waited > 11*time.Second {
			t.Fatalf("took over after %s, want soon after the 8 s lease expired", waited)
		}
		if e, _ := standby.Epoch(); e != 2 {
			t.Fatalf("epoch %d after the takeover, want 2", e)
		}
		n := 0
		for _, l := range logs.out {
			if strings.Contains(l, "standby") {
				n++
			}
		}
		if n != 1 || !logs.find(slog.LevelWarn, "took over") {
			t.Fatalf("logs %q: want one standby line and one takeover", logs.out)
		}
		ctx2, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() {
			done <- waitForLease(ctx2, newLease(leases, "t", "relay-c", 8*time.Second, nil), slog.New(logs))
		}()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("a standby whose context ended: %v", err)
		}
	})
}

// A progress write refused while the lease table says this relay holds
// the lease at its epoch means the progress rows carry an epoch the lease
// table never handed out (it was reset or restored): no restart can cure
// that, so it is fatal. Refused because a newer relay holds the lease, it
// is an ordinary loss. Either way the cursor fails at once.
func TestARefusedProgressWriteIsFatalOnlyWhenTheLeaseCanNeverBeRegained(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name      string
		takenOver bool
		fatal     bool
	}{
		{"the lease table was reset", false, true},
		{"a newer relay took the lease", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leases := &memLease{row: map[string]leaseRecord{}}
			lease := newLease(leases, "t", "relay-a", time.Hour, nil)
			if err := lease.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.takenOver {
				leases.row["t"] = leaseRecord{Owner: "relay-b", Epoch: 5, Expires: time.Now().Add(time.Hour)}
			}
			store := &memProgress{epoch: map[string]int64{"s": 5}, last: map[string]gocql.UUID{}}
			var failed error
			p := &fencedProgress{store: store, lease: lease, refused: func(err error) { failed = err }}
			err := p.SaveProgress(ctx, time.Time{}, "t", scyllacdc.StreamID("s"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()})
			if !errors.Is(err, ErrLeaseLost) || outbox.IsFatal(err) != tc.fatal {
				t.Fatalf("SaveProgress = %v; want ErrLeaseLost, fatal %v", err, tc.fatal)
			}
			if failed == nil || outbox.IsFatal(failed) != tc.fatal {
				t.Fatalf("the cursor was told %v", failed)
			}
		})
	}
}

// staleLease is a holder that still believes it holds epoch, whatever the
// lease row says.
func staleLease(store leaseStore, clock *fakeClock, epoch int64) *Lease {
	l := newLease(store, "x", "stale", time.Hour, clock.now)
	l.held, l.ok = leaseRecord{Owner: "stale", Epoch: epoch, Expires: clock.t.Add(time.Hour)}, true
	return l
}

// Each stream's progress is a lightweight transaction: written at most
// once per interval while changes keep being acknowledged (the relay
// commits every 50 ms), the latest kept and written at the next commit
// past the interval or when the cursor closes.
func TestProgressIsSavedAtMostOncePerIntervalPerStream(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(64, nil)
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	tr.now, tr.progressEvery = clock.now, time.Second
	rep := &fakeReporter{}
	var times []gocql.UUID
	ack := func() {
		t.Helper()
		at := gocql.UUIDFromTime(clock.t)
		times = append(times, at)
		row, _ := insertRow(t, "a", int64(len(times)))
		tr.consume(ctx, "s", at, []changeRow{row}, rep)
		recs, _ := tr.Next(ctx, 10)
		if err := tr.Commit(ctx, recs[len(recs)-1].Position); err != nil {
			t.Fatal(err)
		}
	}
	marked := func(n int, last gocql.UUID, what string) {
		t.Helper()
		if got, count := rep.last(); count != n || got != last {
			t.Fatalf("%s: %d marks, the last %v; want %d, the last %v", what, count, got.Time(), n, last.Time())
		}
	}
	ack()
	marked(1, times[0], "the first acknowledged change")
	for range 9 {
		clock.advance(50 * time.Millisecond)
		ack()
	}
	marked(1, times[0], "nine more within the interval")
	clock.advance(600 * time.Millisecond)
	ack()
	marked(2, times[10], "past the interval")
	clock.advance(100 * time.Millisecond)
	ack()
	marked(2, times[10], "within the next interval")
	tr.Close()
	marked(3, times[11], "closing the cursor writes the latest")
}
