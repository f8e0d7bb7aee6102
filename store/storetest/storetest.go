// Package storetest is the conformance suite every store passes: append
// inside a transaction, read in commit order from a checkpoint, and the
// dead-letter store's parking rules. Adapters call Run from their tests.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Store is what the suite needs of an adapter beyond its source.
type Store interface {
	outbox.DeadLetterStore
	outbox.ActionRequester
	ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error)
	GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error)
}

// Harness is one fresh, empty store.
type Harness struct {
	Store Store
	// Source reads the outbox; the suite opens and commits cursors on it.
	Source outbox.Source
	// Append writes msgs in one transaction together with a domain row.
	// With fail set it must write everything and then roll back.
	Append func(ctx context.Context, msgs []outbox.Message, fail bool) error
	// Orders, when set, is the store's order repository; its events must
	// reach Source.
	Orders order.Repository

	features Features
}

// Features declares what a store supports, so the suite skips the rest.
type Features struct {
	// ConcurrentWriters: appends from several goroutines at once.
	ConcurrentWriters bool
	// UniqueEventIDs: appending an event id again fails. Without it (CQL
	// upserts) the second write must leave one record.
	UniqueEventIDs bool
	// PerAggregateOrder: records come in commit order per aggregate only,
	// not across aggregates (ScyllaDB CDC has one stream per partition).
	PerAggregateOrder bool
	// ReadIdle: a read is complete after this long without records
	// (default: two empty reads), for sources that deliver late.
	ReadIdle time.Duration
}

// Run runs the suite; newHarness must return an empty store each call.
func Run(t *testing.T, f Features, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
		skip bool
	}{
		{"AppendRoundTrip", testAppendRoundTrip, false},
		{"RollbackLeavesNothing", testRollback, false},
		{"DuplicateEventIDRejected", testDuplicateID, !f.UniqueEventIDs},
		{"CheckpointResumes", testCheckpoint, false},
		{"ConcurrentWritersInOrder", testConcurrent, !f.ConcurrentWriters},
		{"DeadLetterParking", testParking, false},
		{"DeadLetterActions", testActions, false},
		{"DeadLetterListing", testListing, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("store does not declare this feature")
			}
			h := newHarness(t)
			h.features = f
			tc.fn(t, h)
		})
	}
}

// RunDeadLetters runs only the dead-letter part of the suite, for a store
// whose source cannot run where the test does (ScyllaDB CDC on Apache
// Cassandra).
func RunDeadLetters(t *testing.T, newStore func(t *testing.T) Store) {
	for name, fn := range map[string]func(*testing.T, Harness){
		"DeadLetterParking": testParking, "DeadLetterActions": testActions, "DeadLetterListing": testListing,
	} {
		t.Run(name, func(t *testing.T) { fn(t, Harness{Store: newStore(t)}) })
	}
}

// Msg builds a valid message for aggregate agg with the given sequence.
func Msg(t testing.TB, agg string, seq int64) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage("order", agg, fmt.Sprintf("Event%d", seq%3), seq, map[string]any{"order_id": agg, "version": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// readAll drains a fresh cursor until it returns nothing twice in a row.
func readAll(t *testing.T, h Harness) ([]outbox.Record, outbox.Cursor) {
	t.Helper()
	c := ctx(t)
	cur, err := h.Source.Open(c)
	if err != nil {
		t.Fatalf("open source: %v", err)
	}
	t.Cleanup(func() { cur.Close() })
	var out []outbox.Record
	lastRecord := time.Now()
	for empty := 0; ; {
		recs, err := cur.Next(c, 100)
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if len(recs) > 0 {
			lastRecord = time.Now()
		} else {
			empty++
		}
		out = append(out, recs...)
		idle := h.features.ReadIdle
		if idle == 0 && empty >= 2 || idle > 0 && time.Since(lastRecord) >= idle {
			return out, cur
		}
	}
}

func testAppendRoundTrip(t *testing.T, h Harness) {
	m1 := Msg(t, "a", 1)
	m1.Headers = map[string]string{outbox.HeaderTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	m2, m3 := Msg(t, "b", 1), Msg(t, "a", 2)
	if err := h.Append(ctx(t), []outbox.Message{m1, m2}, false); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := h.Append(ctx(t), []outbox.Message{m3}, false); err != nil {
		t.Fatalf("append: %v", err)
	}
	got, _ := readAll(t, h)
	want := []outbox.Message{m1, m2, m3}
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	if h.features.PerAggregateOrder {
		got = inWantOrder(t, got, want)
	}
	for i, w := range want {
		g := got[i].Message
		if g.ID != w.ID || g.AggregateType != w.AggregateType || g.AggregateID != w.AggregateID ||
			g.Type != w.Type || g.Sequence != w.Sequence || !g.Timestamp.Equal(w.Timestamp.Truncate(time.Microsecond)) ||
			g.Headers[outbox.HeaderTraceParent] != w.Headers[outbox.HeaderTraceParent] || !jsonEqual(g.Payload, w.Payload) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, g, w)
		}
		if got[i].Position == "" {
			t.Errorf("record %d has no position", i)
		}
	}
}

// inWantOrder checks that got holds each aggregate's records in want's
// order and returns it rearranged into want's global order.
func inWantOrder(t *testing.T, got []outbox.Record, want []outbox.Message) []outbox.Record {
	t.Helper()
	next := map[outbox.AggregateKey][]outbox.Message{}
	for _, w := range want {
		next[w.Key()] = append(next[w.Key()], w)
	}
	byID := map[uuid.UUID]outbox.Record{}
	for _, g := range got {
		k := g.Message.Key()
		if len(next[k]) == 0 || next[k][0].ID != g.Message.ID {
			t.Fatalf("record %s of %s out of its aggregate's order", g.Message.ID, k)
		}
		next[k] = next[k][1:]
		byID[g.Message.ID] = g
	}
	out := make([]outbox.Record, len(want))
	for i, w := range want {
		out[i] = byID[w.ID]
	}
	return out
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func testRollback(t *testing.T, h Harness) {
	if err := h.Append(ctx(t), []outbox.Message{Msg(t, "a", 1), Msg(t, "a", 2)}, true); err == nil {
		t.Fatal("a failed transaction reported success")
	}
	kept := Msg(t, "b", 1)
	if err := h.Append(ctx(t), []outbox.Message{kept}, false); err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, h)
	if len(got) != 1 || got[0].Message.ID != kept.ID {
		t.Fatalf("after a rollback read %d records, want only the committed one", len(got))
	}
}

func testDuplicateID(t *testing.T, h Harness) {
	m := Msg(t, "a", 1)
	if err := h.Append(ctx(t), []outbox.Message{m}, false); err != nil {
		t.Fatal(err)
	}
	if err := h.Append(ctx(t), []outbox.Message{Msg(t, "b", 1), m}, false); err == nil {
		t.Fatal("appending an existing event id succeeded")
	}
	if got, _ := readAll(t, h); len(got) != 1 {
		t.Fatalf("read %d records, want 1: the failed transaction must leave nothing", len(got))
	}
}

// Each message commits alone: a change-data-capture source confirms
// positions at transaction boundaries.
func testCheckpoint(t *testing.T, h Harness) {
	var msgs []outbox.Message
	for i := range 5 {
		m := Msg(t, "a", int64(i+1))
		msgs = append(msgs, m)
		if err := h.Append(ctx(t), []outbox.Message{m}, false); err != nil {
			t.Fatal(err)
		}
	}
	got, cur := readAll(t, h)
	if len(got) != 5 {
		t.Fatalf("read %d, want 5", len(got))
	}
	if err := cur.Commit(ctx(t), got[2].Position); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cur.Close()
	again, _ := readAll(t, h)
	if len(again) != 2 || again[0].Message.ID != msgs[3].ID || again[1].Message.ID != msgs[4].ID {
		t.Fatalf("after checkpoint at record 3, read %d records; want records 4 and 5", len(again))
	}
}

func testConcurrent(t *testing.T, h Harness) {
	const writers, perWriter = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if err := h.Append(ctx(t), []outbox.Message{Msg(t, fmt.Sprintf("w%d", w), int64(i+1))}, false); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	got, _ := readAll(t, h)
	if len(got) != writers*perWriter {
		t.Fatalf("read %d, want %d", len(got), writers*perWriter)
	}
	last := map[string]int64{}
	for _, r := range got {
		if r.Message.Sequence <= last[r.Message.AggregateID] {
			t.Fatalf("aggregate %s read out of order: %d after %d", r.Message.AggregateID, r.Message.Sequence, last[r.Message.AggregateID])
		}
		last[r.Message.AggregateID] = r.Message.Sequence
	}
}

func dead(m outbox.Message, msg string) outbox.DeadLetter {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return outbox.DeadLetter{Message: m, Error: msg, FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}
}

func testParking(t *testing.T, h Harness) {
	c := ctx(t)
	s := h.Store
	a1, a2, b1 := Msg(t, "a", 1), Msg(t, "a", 2), Msg(t, "b", 1)
	first, err := s.AddDeadLetter(c, dead(a1, "too large"))
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == 0 || first.Status != outbox.StatusParked {
		t.Fatalf("added dead letter: %+v", first)
	}
	again, err := s.AddDeadLetter(c, dead(a1, "too large"))
	if err != nil || again.ID != first.ID {
		t.Fatalf("re-adding a parked event: id %d err %v, want the existing id %d", again.ID, err, first.ID)
	}
	behind, err := s.AddDeadLetter(c, dead(a2, "parked"))
	if err != nil {
		t.Fatal(err)
	}
	if behind.ParkedBehind != a1.ID.String() {
		t.Errorf("second message parked behind %q, want %s", behind.ParkedBehind, a1.ID)
	}
	if _, err := s.AddDeadLetter(c, dead(b1, "invalid")); err != nil {
		t.Fatal(err)
	}
	parked, err := s.ParkedAggregates(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 2 {
		t.Fatalf("parked aggregates: %+v, want a and b", parked)
	}
	for _, p := range parked {
		want := map[string]int{"a": 2, "b": 1}[p.Key.ID]
		if p.ParkedEvents != want || p.Pending != "" {
			t.Errorf("parked %s: %d events, pending %q; want %d, none", p.Key, p.ParkedEvents, p.Pending, want)
		}
	}
	msgs, err := s.ParkedMessages(c, a1.Key())
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Message.ID != a1.ID || msgs[1].Message.ID != a2.ID {
		t.Fatalf("parked messages of a out of order: %+v", msgs)
	}
	if !jsonEqual(msgs[0].Message.Payload, a1.Payload) || msgs[0].Error != "too large" {
		t.Errorf("dead letter lost its message or error: %+v", msgs[0])
	}
}

func testActions(t *testing.T, h Harness) {
	c := ctx(t)
	s := h.Store
	a1, a2 := Msg(t, "a", 1), Msg(t, "a", 2)
	if err := s.RequestAction(c, a1.Key(), outbox.ActionRequest{Action: outbox.ActionReplay, Entry: 1, Reason: "x"}); !errors.Is(err, outbox.ErrNotParked) {
		t.Fatalf("request on an aggregate not parked: %v, want ErrNotParked", err)
	}
	d1 := must[outbox.DeadLetter](t)(s.AddDeadLetter(c, dead(a1, "boom")))
	d2 := must[outbox.DeadLetter](t)(s.AddDeadLetter(c, dead(a2, "parked")))
	if err := s.RequestAction(c, a1.Key(), outbox.ActionRequest{Action: outbox.ActionSkip, Entry: d1.ID, Reason: "first thought"}); err != nil {
		t.Fatal(err)
	}
	// A later request replaces the pending one, entry and all.
	if err := s.RequestAction(c, a1.Key(), outbox.ActionRequest{Action: outbox.ActionReplay, Entry: d2.ID, Reason: "fixed the schema"}); err != nil {
		t.Fatal(err)
	}
	parked, err := s.ParkedAggregates(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 || parked[0].Pending != outbox.ActionReplay || parked[0].PendingEntry != d2.ID ||
		parked[0].Reason != "fixed the schema" || parked[0].RequestedAt == nil {
		t.Fatalf("pending request not recorded with its entry %d: %+v", d2.ID, parked)
	}
	if err := s.FailAction(c, a1.Key(), d1.ID, "still too large"); err != nil {
		t.Fatal(err)
	}
	got := must[outbox.DeadLetter](t)(s.GetDeadLetter(c, d1.ID))
	if got.ReplayCount != 1 || got.FailureCount != 2 || got.Error != "still too large" || got.Status != outbox.StatusParked {
		t.Fatalf("after a failed replay: %+v", got)
	}
	parked = must[[]outbox.ParkedAggregate](t)(s.ParkedAggregates(c))
	if len(parked) != 1 || parked[0].Pending != "" || parked[0].PendingEntry != 0 || parked[0].LastError != "still too large" {
		t.Fatalf("failed request not cleared: %+v", parked)
	}
	if err := s.ResolveDeadLetter(c, d1.ID, outbox.StatusSkipped, "poison"); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteAction(c, a1.Key()); err != nil {
		t.Fatal(err)
	}
	if parked = must[[]outbox.ParkedAggregate](t)(s.ParkedAggregates(c)); len(parked) != 1 {
		t.Fatal("aggregate unparked while a parked entry remains")
	}
	if err := s.ResolveDeadLetter(c, d2.ID, outbox.StatusReplayed, "released"); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteAction(c, a1.Key()); err != nil {
		t.Fatal(err)
	}
	if parked = must[[]outbox.ParkedAggregate](t)(s.ParkedAggregates(c)); len(parked) != 0 {
		t.Fatalf("aggregate still parked after its last entry was resolved: %+v", parked)
	}
	got = must[outbox.DeadLetter](t)(s.GetDeadLetter(c, d2.ID))
	if got.Status != outbox.StatusReplayed || got.ResolvedAt == nil || got.Resolution != "released" || got.ReplayCount != 1 {
		t.Fatalf("resolved entry: %+v", got)
	}
	if err := s.ResolveDeadLetter(c, 999999, outbox.StatusSkipped, ""); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("resolving an unknown id: %v, want ErrNotFound", err)
	}
}

// must returns a function that fails t on err and returns v:
// must[T](t)(f()).
func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func idsOf(ds []outbox.DeadLetter) []int64 {
	out := []int64{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// Every filter is checked against the exact entries it must return, in
// order, and every listing's error is checked: a filter that returned
// nothing, or failed, cannot pass.
func testListing(t *testing.T, h Harness) {
	c := ctx(t)
	s := h.Store
	// Whole seconds, a minute apart: every store keeps them exactly.
	t0 := time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute)
	var ids []int64
	for i := range 5 {
		// Aggregates agg0 (entries 0, 2, 4) and agg1 (1, 3); types
		// Event1 (0, 3), Event2 (1, 4), Event0 (2).
		m := Msg(t, fmt.Sprintf("agg%d", i%2), int64(i+1))
		at := t0.Add(time.Duration(i) * time.Minute)
		d, err := s.AddDeadLetter(c, outbox.DeadLetter{Message: m, Error: "x", FailureCount: 1, FirstFailedAt: at, LastFailedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if err := s.ResolveDeadLetter(c, ids[4], outbox.StatusSkipped, "poison"); err != nil {
		t.Fatal(err)
	}
	agg0, agg1 := outbox.AggregateKey{Type: "order", ID: "agg0"}, outbox.AggregateKey{Type: "order", ID: "agg1"}
	pick := func(is ...int) []int64 {
		out := []int64{}
		for _, i := range is {
			out = append(out, ids[i])
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    outbox.DeadLetterFilter
		want []int64
	}{
		{"everything", outbox.DeadLetterFilter{}, pick(0, 1, 2, 3, 4)},
		{"no limit", outbox.DeadLetterFilter{Limit: -1}, pick(0, 1, 2, 3, 4)},
		{"first page", outbox.DeadLetterFilter{Limit: 2}, pick(0, 1)},
		{"second page", outbox.DeadLetterFilter{Limit: 2, AfterID: ids[1]}, pick(2, 3)},
		{"last page", outbox.DeadLetterFilter{Limit: 2, AfterID: ids[3]}, pick(4)},
		{"past the end", outbox.DeadLetterFilter{AfterID: ids[4]}, pick()},
		{"by aggregate", outbox.DeadLetterFilter{Aggregate: &agg1}, pick(1, 3)},
		{"by aggregate, paged", outbox.DeadLetterFilter{Aggregate: &agg0, Limit: 1, AfterID: ids[0]}, pick(2)},
		{"by type", outbox.DeadLetterFilter{Type: "Event1"}, pick(0, 3)},
		{"by aggregate and type", outbox.DeadLetterFilter{Aggregate: &agg0, Type: "Event2"}, pick(4)},
		{"by status parked", outbox.DeadLetterFilter{Status: outbox.StatusParked}, pick(0, 1, 2, 3)},
		{"by status skipped", outbox.DeadLetterFilter{Status: outbox.StatusSkipped}, pick(4)},
		{"since", outbox.DeadLetterFilter{Since: t0.Add(2 * time.Minute)}, pick(2, 3, 4)},
		{"until", outbox.DeadLetterFilter{Until: t0.Add(2 * time.Minute)}, pick(0, 1)},
		{"since and until", outbox.DeadLetterFilter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, pick(1, 2)},
		{"since the future", outbox.DeadLetterFilter{Since: time.Now().Add(time.Hour)}, pick()},
		{"unknown type", outbox.DeadLetterFilter{Type: "NoSuchEvent"}, pick()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListDeadLetters(c, tc.f)
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			if !slices.Equal(idsOf(got), tc.want) {
				t.Fatalf("listed %v, want %v", idsOf(got), tc.want)
			}
		})
	}
	// Without payloads: the same entries, each with its payload's size.
	lean, err := s.ListDeadLetters(c, outbox.DeadLetterFilter{Aggregate: &agg1, OmitPayload: true})
	if err != nil || !slices.Equal(idsOf(lean), pick(1, 3)) {
		t.Fatalf("list without payloads: %v %v", idsOf(lean), err)
	}
	for _, d := range lean {
		full, err := s.GetDeadLetter(c, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Message.Payload != nil || d.PayloadSize == 0 || d.PayloadSize != len(full.Message.Payload) ||
			d.Message.Type != full.Message.Type || d.Error != full.Error {
			t.Fatalf("without payload: %+v; want no payload, PayloadSize %d and the rest as %+v", d, len(full.Message.Payload), full)
		}
		if full.PayloadSize != 0 {
			t.Fatalf("with its payload, PayloadSize is %d, want 0", full.PayloadSize)
		}
	}
	// Stores that list several aggregates' parked events in one query.
	if pe, ok := s.(interface {
		ParkedEvents(context.Context, []outbox.AggregateKey, int) ([]outbox.DeadLetter, error)
	}); ok {
		none := outbox.AggregateKey{Type: "order", ID: "none"}
		for _, tc := range []struct {
			per  int
			want []int64
		}{{1, pick(0, 1)}, {2, pick(0, 1, 2, 3)}, {9, pick(0, 1, 2, 3)}} {
			got, err := pe.ParkedEvents(c, []outbox.AggregateKey{agg0, none, agg1}, tc.per)
			if err != nil || !slices.Equal(idsOf(got), tc.want) {
				t.Fatalf("parked events, %d per aggregate: %v %v, want %v", tc.per, idsOf(got), err, tc.want)
			}
			for _, d := range got {
				if d.Message.Payload != nil || d.PayloadSize == 0 || d.Status != outbox.StatusParked {
					t.Fatalf("parked event %+v: want parked, no payload, its size", d)
				}
			}
		}
		if got, err := pe.ParkedEvents(c, []outbox.AggregateKey{agg1}, 9); err != nil || !slices.Equal(idsOf(got), pick(1, 3)) {
			t.Fatalf("parked events of agg1: %v %v", idsOf(got), err)
		}
	}
	one, err := s.GetDeadLetter(c, ids[3])
	if err != nil || one.ID != ids[3] || one.Message.AggregateID != "agg1" || one.Message.Type != "Event1" || !one.LastFailedAt.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("get %d: %+v %v", ids[3], one, err)
	}
	if _, err := s.GetDeadLetter(c, 424242); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("unknown id: %v, want ErrNotFound", err)
	}
}
