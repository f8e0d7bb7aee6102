package poll_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/memstore"
	"github.com/outbox-dev/outbox/store/poll"
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

// memLock is a poll.Lock in memory, shared by the sources under test.
type memLock struct {
	mu     sync.Mutex
	holder *memLockHandle
}

type memLockHandle struct {
	l    *memLock
	lost chan struct{}
}

func (l *memLock) handle() *memLockHandle { return &memLockHandle{l: l} }

func (h *memLockHandle) TryLock(context.Context) (<-chan struct{}, bool, error) {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.l.holder != nil && h.l.holder != h {
		return nil, false, nil
	}
	h.l.holder, h.lost = h, make(chan struct{})
	return h.lost, true, nil
}

func (h *memLockHandle) Unlock() error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.l.holder == h {
		h.l.holder = nil
	}
	return nil
}

// steal ends the holder's session: it has lost the lock.
func (l *memLock) steal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder != nil {
		close(l.holder.lost)
		l.holder = nil
	}
}

// Two relays on one store: the second waits as a standby (and says so
// once) until the first stops, then takes over from the checkpoint; a
// relay that loses its lock stops reading and checkpointing at once.
func TestOneActiveReaderPerLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		appendOne(t, s, 1)
		lock := &memLock{}
		var logs strings.Builder
		log := slog.New(slog.NewTextHandler(&logs, nil))
		first, _ := poll.NewSource(s, poll.Config{Lock: lock.handle(), Logger: log})
		second, _ := poll.NewSource(s, poll.Config{Lock: lock.handle(), Logger: log})
		active, err := first.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		recs, _ := active.Next(t.Context(), 10)
		if err := active.Commit(t.Context(), recs[0].Position); err != nil {
			t.Fatal(err)
		}
		opened := make(chan outbox.Cursor, 1)
		go func() {
			c, err := second.Open(t.Context())
			if err != nil {
				t.Error(err)
			}
			opened <- c
		}()
		elapse(10 * time.Second)
		select {
		case <-opened:
			t.Fatal("a second relay opened while the first holds the lock")
		default:
		}
		if n := strings.Count(logs.String(), "standby"); n != 1 {
			t.Fatalf("standby said %d times in 10 s, want once:\n%s", n, logs.String())
		}
		appendOne(t, s, 2)
		active.Close() // the first relay stops
		var standby outbox.Cursor
		select {
		case standby = <-opened:
		case <-time.After(time.Second):
			t.Fatal("the standby did not take over within a second of the lock's release")
		}
		got, _ := standby.Next(t.Context(), 10)
		if len(got) != 1 || got[0].Message.Sequence != 2 {
			t.Fatalf("the standby read %v, want only what followed the checkpoint", got)
		}
		if !strings.Contains(logs.String(), "took over") {
			t.Fatalf("no takeover in the log:\n%s", logs.String())
		}
		lock.steal()
		if _, err := standby.Next(t.Context(), 10); !errors.Is(err, poll.ErrLockLost) {
			t.Fatalf("Next after the lock was lost: %v, want ErrLockLost", err)
		}
		if err := standby.Commit(t.Context(), got[0].Position); !errors.Is(err, poll.ErrLockLost) {
			t.Fatalf("Commit after the lock was lost: %v, want ErrLockLost", err)
		}
	})
}

// elapse advances a synctest bubble's fake clock.
func elapse(d time.Duration) { <-time.After(d) }
