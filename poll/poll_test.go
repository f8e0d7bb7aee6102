package poll_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/poll"
	"github.com/outbox-dev/outbox/store/memstore"
)

// appendOne commits one event; it reports with t.Error, so it may run on
// another goroutine.
func appendOne(t *testing.T, s *memstore.Store, seq int64) {
	m, err := outbox.NewMessage("order", "o1", "Changed", seq, seq)
	if err == nil {
		err = s.Transact(context.Background(), func(tx *memstore.Tx) error { return tx.Append(m) })
	}
	if err != nil {
		t.Error(err)
	}
}

func TestCursorWaitsAnIntervalOrAWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		src, _ := poll.NewSource(s, poll.Config{Interval: time.Second, Wake: s.Wake()})
		cur, err := src.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if recs, err := cur.Next(t.Context(), 10); len(recs) != 0 || err != nil {
			t.Fatalf("empty outbox: %v %v", recs, err)
		}
		if waited := time.Since(start); waited != time.Second {
			t.Fatalf("idle poll waited %s, want the 1 s interval", waited)
		}
		go appendOne(t, s, 1) // a commit wakes the poller at once
		start = time.Now()
		cur.Next(t.Context(), 10) // wakes on the commit, returns nothing yet
		recs, _ := cur.Next(t.Context(), 10)
		if len(recs) != 1 || time.Since(start) >= time.Second {
			t.Fatalf("after a wake: %d records after %s", len(recs), time.Since(start))
		}
	})
}

func TestCursorResumesAfterItsCommittedPosition(t *testing.T) {
	s := memstore.New()
	for i := range 3 {
		appendOne(t, s, int64(i+1))
	}
	src, _ := poll.NewSource(s, poll.Config{Name: "a"})
	cur, _ := src.Open(context.Background())
	recs, _ := cur.Next(context.Background(), 2)
	if len(recs) != 2 {
		t.Fatalf("max 2: got %d", len(recs))
	}
	cur.Commit(context.Background(), recs[0].Position)
	again, _ := src.Open(context.Background())
	recs, _ = again.Next(context.Background(), 10)
	if len(recs) != 2 || recs[0].Message.Sequence != 2 {
		t.Fatalf("reopened after committing the first: %d records from %d", len(recs), recs[0].Message.Sequence)
	}
	other, _ := poll.NewSource(s, poll.Config{Name: "b"})
	cur, _ = other.Open(context.Background())
	if recs, _ := cur.Next(context.Background(), 10); len(recs) != 3 {
		t.Fatal("checkpoints are per name")
	}
	if _, err := poll.NewSource(s, poll.Config{Interval: -time.Second}); err == nil {
		t.Fatal("a negative interval was accepted")
	}
}

func ExampleNewSource() {
	store := memstore.New()
	src, _ := poll.NewSource(store, poll.Config{Name: "orders", Wake: store.Wake()})
	m, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]int{"total": 5})
	store.Transact(context.Background(), func(tx *memstore.Tx) error { return tx.Append(m) })
	cur, _ := src.Open(context.Background())
	recs, _ := cur.Next(context.Background(), 100)
	fmt.Println(len(recs), recs[0].Message.Type, recs[0].Position)
	// Output: 1 OrderCreated 1
}
