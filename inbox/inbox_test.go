package inbox_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/inbox"
)

func event(id string, seq int64) inbox.Event {
	return inbox.Event{ID: id, AggregateType: "user", AggregateID: "u-1", Type: "UserChanged", Sequence: seq}
}

func TestRecordSkipsWhatWasSeen(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		in := b.inbox(t, inbox.Config{Consumer: "billing"})
		ctx := t.Context()
		if res, err := b.record(ctx, in, event("e1", 1), true); err != nil || res.Duplicate {
			t.Fatalf("first delivery: %+v, %v; want new", res, err)
		}
		if res, err := b.record(ctx, in, event("e1", 1), true); err != nil || !res.Duplicate {
			t.Fatalf("second delivery: %+v, %v; want a duplicate", res, err)
		}
		// A rolled-back transaction recorded nothing: the next delivery
		// is processed.
		if res, err := b.record(ctx, in, event("e2", 2), false); err != nil || res.Duplicate {
			t.Fatalf("delivery in a rolled-back transaction: %+v, %v", res, err)
		}
		if res, err := b.record(ctx, in, event("e2", 2), true); err != nil || res.Duplicate {
			t.Fatalf("delivery after a rollback: %+v, %v; want new", res, err)
		}
		// Consumers are independent.
		other := b.inbox(t, inbox.Config{Consumer: "email"})
		if res, err := b.record(ctx, other, event("e1", 1), true); err != nil || res.Duplicate {
			t.Fatalf("another consumer's first delivery: %+v, %v; want new", res, err)
		}
		if _, err := b.record(ctx, in, inbox.Event{}, true); !errors.Is(err, inbox.ErrNoEventID) {
			t.Fatalf("an event without id: %v, want ErrNoEventID", err)
		}
	})
}

func TestSequenceGapsAndRegressions(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		in := b.inbox(t, inbox.Config{Consumer: "billing", TrackSequences: true})
		for i, tc := range []struct {
			ev   inbox.Event
			want inbox.Result
		}{
			{event("e1", 1), inbox.Result{}},
			{event("e2", 2), inbox.Result{Previous: 1}},
			{event("e5", 5), inbox.Result{Previous: 2, Gap: 2}},
			{event("e3", 3), inbox.Result{Previous: 5, Regression: true}}, // late: the highest stays 5
			{event("e6", 6), inbox.Result{Previous: 5}},
			{event("e6", 6), inbox.Result{Duplicate: true}},
			{event("e6bis", 6), inbox.Result{Previous: 6, Regression: true}}, // another event, same sequence
			{inbox.Event{ID: "unsequenced", AggregateType: "user", AggregateID: "u-1"}, inbox.Result{}},
			{inbox.Event{ID: "v1", AggregateType: "user", AggregateID: "u-2", Sequence: 4}, inbox.Result{}}, // baseline
			{inbox.Event{ID: "w1", AggregateType: "team", AggregateID: "u-1", Sequence: 1}, inbox.Result{}}, // another type, same id
		} {
			got, err := b.record(t.Context(), in, tc.ev, true)
			if err != nil || got != tc.want {
				t.Fatalf("step %d, %s #%d: %+v, %v; want %+v", i, tc.ev.ID, tc.ev.Sequence, got, err, tc.want)
			}
		}
		// Tracking off: nothing is reported.
		plain := b.inbox(t, inbox.Config{Consumer: "plain"})
		for _, ev := range []inbox.Event{event("e5", 5), event("e1", 1)} {
			if got, err := b.record(t.Context(), plain, ev, true); err != nil || got != (inbox.Result{}) {
				t.Fatalf("untracked %s: %+v, %v", ev.ID, got, err)
			}
		}
	})
}

// TestConcurrentDeliveriesAreProcessedOnce: copies of one event recorded
// at once in transactions of their own (a partition handed over in a
// rebalance): exactly one is new.
func TestConcurrentDeliveriesAreProcessedOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		in := b.inbox(t, inbox.Config{Consumer: "billing", TrackSequences: true})
		const copies = 8
		var wg sync.WaitGroup
		results := make(chan inbox.Result, copies)
		for range copies {
			wg.Go(func() {
				res, err := b.record(t.Context(), in, event("e1", 1), true)
				if err != nil {
					t.Error(err)
				}
				results <- res
			})
		}
		wg.Wait()
		close(results)
		fresh := 0
		for r := range results {
			if !r.Duplicate {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d of %d concurrent copies were new, want exactly 1", fresh, copies)
		}
	})
}

// TestCleanupForgetsOldIDsButKeepsSequences: ids older than the retention
// are deleted, newer ones kept; an expired event delivered again is new
// to the id table but still a regression for its aggregate.
func TestCleanupForgetsOldIDsButKeepsSequences(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		now := time.Now()
		clock := now.Add(-48 * time.Hour)
		cfg := inbox.Config{Consumer: "billing", TrackSequences: true, Now: func() time.Time { return clock }}
		in := b.inbox(t, cfg)
		for i := range 3 {
			if _, err := b.record(t.Context(), in, event(fmt.Sprint("old", i), int64(i+1)), true); err != nil {
				t.Fatal(err)
			}
		}
		other := b.inbox(t, inbox.Config{Consumer: "other", Now: func() time.Time { return clock }})
		if _, err := b.record(t.Context(), other, event("old0", 1), true); err != nil {
			t.Fatal(err)
		}
		clock = now
		if _, err := b.record(t.Context(), in, event("new", 4), true); err != nil {
			t.Fatal(err)
		}
		if n, err := b.cleanup(t.Context(), in, 24*time.Hour); err != nil || n != 3 {
			t.Fatalf("Cleanup = %d, %v; want the 3 ids older than a day", n, err)
		}
		if res, _ := b.record(t.Context(), in, event("new", 4), true); !res.Duplicate {
			t.Fatal("a recent id was cleaned up")
		}
		if res, _ := b.record(t.Context(), other, event("old0", 1), true); !res.Duplicate {
			t.Fatal("cleanup deleted another consumer's ids")
		}
		res, err := b.record(t.Context(), in, event("old1", 2), true)
		if err != nil || res.Duplicate || !res.Regression || res.Previous != 4 {
			t.Fatalf("an expired event delivered again: %+v, %v; want new to the ids, a regression behind 4", res, err)
		}
		if _, err := b.cleanup(t.Context(), in, 0); !errors.Is(err, inbox.ErrInvalidConfig) {
			t.Fatalf("Cleanup with no retention: %v", err)
		}
	})
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg   inbox.Config
		field string
	}{
		{inbox.Config{}, "Consumer"},
		{inbox.Config{Consumer: "c", Dialect: 9}, "Dialect"},
	} {
		if _, err := inbox.New(tc.cfg); !errors.Is(err, inbox.ErrInvalidConfig) || !contains(err.Error(), tc.field) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	in, _ := inbox.New(inbox.Config{Consumer: "c"})
	if _, err := in.Record(t.Context(), nil, event("e", 1)); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("Record without a Dialect: %v, want ErrInvalidConfig", err)
	}
}

func TestEventFromHeaders(t *testing.T) {
	ev, err := inbox.EventFromHeaders(map[string]string{"id": "e1", "aggregatetype": "user", "aggregateid": "u-1", "type": "T", "sequence": "7"})
	if err != nil || ev != (inbox.Event{ID: "e1", AggregateType: "user", AggregateID: "u-1", Type: "T", Sequence: 7}) {
		t.Fatalf("EventFromHeaders = %+v, %v", ev, err)
	}
	if _, err := inbox.EventFromHeaders(map[string]string{"sequence": "1"}); !errors.Is(err, inbox.ErrNoEventID) {
		t.Fatalf("no id: %v", err)
	}
	if _, err := inbox.EventFromHeaders(map[string]string{"id": "e", "sequence": "x"}); err == nil {
		t.Fatal("a bad sequence header was accepted")
	}
}
