package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/storetest"
)

// newDB creates a fresh database for one test and returns its store and
// DSN; the database and its replication slots are dropped afterwards.
func newDB(t testing.TB) (*postgres.Store, string) {
	t.Helper()
	dsn := testenv.PostgresDatabase(t)
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

func appendFunc(s *postgres.Store) func(context.Context, []outbox.Message, bool) error {
	return func(ctx context.Context, msgs []outbox.Message, fail bool) error {
		return s.Transact(ctx, func(tx pgx.Tx) error {
			if err := s.Append(ctx, tx, msgs...); err != nil {
				return err
			}
			if fail {
				return errors.New("rolled back on purpose")
			}
			return nil
		})
	}
}

func TestConformancePolling(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
		s, _ := newDB(t)
		src, err := poll.NewSource(s, poll.Config{Interval: 5 * time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{Store: s, Source: src, Append: appendFunc(s)}
	})
}

var slotSeq int

func cdc(t testing.TB, s *postgres.Store, cfg postgres.CDCConfig) *postgres.CDCSource {
	t.Helper()
	if cfg.Slot == "" {
		slotSeq++
		cfg.Slot = fmt.Sprintf("slot_%d_%d", time.Now().UnixNano()%1e9, slotSeq)
	}
	cfg.StatusInterval = 50 * time.Millisecond
	src, err := s.CDC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestConformanceCDC(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
		s, _ := newDB(t)
		src := cdc(t, s, postgres.CDCConfig{})
		// The slot captures what commits after it exists: create it before
		// the first write, as outbox migrate does.
		if _, err := src.Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{Store: s, Source: src, Append: appendFunc(s)}
	})
}

// drain reads a cursor until it has want records or the time runs out.
func drain(t *testing.T, cur outbox.Cursor, want int, limit time.Duration) []outbox.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	var out []outbox.Record
	for len(out) < want && ctx.Err() == nil {
		recs, err := cur.Next(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, recs...)
	}
	return out
}

func msg(t testing.TB, agg string, seq int64) outbox.Message {
	m, err := outbox.NewMessage("order", agg, "Changed", seq, map[string]any{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A transaction that stays open while later ones commit must not have its
// row skipped: the failure of polling by offset.
func TestPollingSkipsNothingUnderConcurrentLongTransactions(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src, err := poll.NewSource(s, poll.Config{Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()

	// One long transaction takes its position first and commits last.
	long, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A failure before its commit must not leave it holding a connection:
	// closing the pool would wait for it forever.
	defer long.Rollback(context.Background())
	held := msg(t, "long", 1)
	if err := s.Append(ctx, long, held); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := appendFunc(s)(ctx, []outbox.Message{msg(t, fmt.Sprint("short", i), 1)}, false); err != nil {
			t.Fatal(err)
		}
	}
	// Twice: the first read of a fresh cursor and a read after it.
	for range 2 {
		recs, err := cur.Next(ctx, 100)
		if err != nil {
			t.Fatalf("read while a transaction is open: %v", err)
		}
		if len(recs) != 0 {
			t.Fatalf("read %d rows committed after a transaction still open: they could pass its row", len(recs))
		}
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := drain(t, cur, 21, 5*time.Second)
	if len(got) != 21 || got[0].Message.ID != held.ID {
		t.Fatalf("after the long transaction committed read %d rows (first %v), want 21 starting with its row", len(got), got[0].Message.ID)
	}

	// Now many writers with random long transactions, and a reader that
	// never stops: every committed row must be read exactly once.
	var wg sync.WaitGroup
	committed := sync.Map{}
	for w := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 40 {
				m := msg(t, fmt.Sprintf("w%d", w), int64(i+1))
				err := s.Transact(ctx, func(tx pgx.Tx) error {
					if err := s.Append(ctx, tx, m); err != nil {
						return err
					}
					if rng.IntN(5) == 0 { // hold the transaction open a while
						<-time.After(time.Duration(rng.IntN(40)) * time.Millisecond)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				committed.Store(m.ID, true)
			}
		})
	}
	seen := map[string]int{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	deadline := time.After(30 * time.Second)
	for finished := false; ; {
		recs, err := cur.Next(ctx, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			seen[r.Message.ID.String()]++
		}
		if finished && len(recs) == 0 {
			break
		}
		select {
		case <-done:
			finished = true
		case <-deadline:
			t.Fatal("reader did not catch up")
		default:
		}
	}
	missing := 0
	committed.Range(func(k, _ any) bool {
		if seen[k.(fmt.Stringer).String()] != 1 {
			missing++
		}
		return true
	})
	if missing != 0 {
		t.Fatalf("%d of 240 rows committed under concurrent long transactions were skipped or read twice", missing)
	}
}

func TestCDCResumesFromTheSlot(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first []outbox.Message
	for i := range 3 {
		first = append(first, msg(t, "a", int64(i+1)))
	}
	// Two in one transaction, one alone.
	for _, batch := range [][]outbox.Message{first[:2], first[2:]} {
		if err := appendFunc(s)(ctx, batch, false); err != nil {
			t.Fatal(err)
		}
	}
	got := drain(t, cur, 3, 10*time.Second)
	if len(got) != 3 {
		t.Fatalf("read %d, want 3", len(got))
	}
	for i, r := range got {
		if r.Message.ID != first[i].ID || r.Message.Sequence != first[i].Sequence || r.Message.Timestamp.IsZero() {
			t.Fatalf("record %d: %+v, want %+v", i, r.Message, first[i])
		}
	}
	// Acknowledging only the first record of the two-row transaction must
	// not confirm the transaction.
	if err := cur.Commit(ctx, got[0].Position); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	cur, err = src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again := drain(t, cur, 3, 10*time.Second)
	if len(again) != 3 || again[0].Message.ID != first[0].ID {
		t.Fatalf("a partly acknowledged transaction must be read again whole: got %d records", len(again))
	}
	if err := cur.Commit(ctx, again[2].Position); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	next := msg(t, "a", 4)
	if err := appendFunc(s)(ctx, []outbox.Message{next}, false); err != nil {
		t.Fatal(err)
	}
	cur, err = src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	last := drain(t, cur, 1, 10*time.Second)
	if len(last) != 1 || last[0].Message.ID != next.ID {
		t.Fatalf("after acknowledging everything, reopening read %d records, want only the new one", len(last))
	}
	if lag, err := src.SlotLag(ctx); err != nil || lag < 0 {
		t.Fatalf("slot lag %d %v", lag, err)
	}
}

func TestLostSlotFailsLoudlyAndIsRecreatedOnlyOnRequest(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{Slot: fmt.Sprintf("lost_%d", time.Now().UnixNano()%1e9)})
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cur.Close()
	slot := "lost_" + strings.TrimPrefix(src.CheckpointName(), "cdc:lost_")
	// The server releases the slot a moment after the client disconnects.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Pool().Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		<-time.After(50 * time.Millisecond)
	}
	_, err = src.Open(ctx)
	if !errors.Is(err, postgres.ErrSlotLost) || !strings.Contains(err.Error(), "--recreate-slot") {
		t.Fatalf("opening with a lost slot: %v, want ErrSlotLost naming --recreate-slot", err)
	}
	var exists bool
	if err := s.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("the slot was silently recreated")
	}
	again := cdc(t, s, postgres.CDCConfig{Slot: slot, RecreateSlot: true})
	cur, err = again.Open(ctx)
	if err != nil {
		t.Fatalf("--recreate-slot: %v", err)
	}
	cur.Close()
}

func TestPublicationMustCoverOnlyTheOutbox(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	if _, err := s.Pool().Exec(ctx, `CREATE PUBLICATION wide_pub FOR TABLE outbox, orders`); err != nil {
		t.Fatal(err)
	}
	_, err := cdc(t, s, postgres.CDCConfig{Publication: "wide_pub"}).Open(ctx)
	if err == nil || !strings.Contains(err.Error(), "outbox table only") {
		t.Fatalf("a publication over other tables was accepted: %v", err)
	}
}

func TestCleanupDeletesOnlyAcknowledgedRowsPastRetention(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	for i := range 10 {
		if err := appendFunc(s)(ctx, []outbox.Message{msg(t, "a", int64(i+1))}, false); err != nil {
			t.Fatal(err)
		}
	}
	src, err := poll.NewSource(s, poll.Config{Name: "clean"})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	recs := drain(t, cur, 10, 5*time.Second)
	if len(recs) != 10 {
		t.Fatalf("read %d rows, want 10", len(recs))
	}
	if err := cur.Commit(ctx, recs[5].Position); err != nil { // six acknowledged
		t.Fatal(err)
	}
	cleaner := s.NewCleaner(s.PollCleanupHorizon("clean"), postgres.CleanupConfig{Retention: time.Nanosecond, BatchSize: 2})
	n, err := cleaner.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left int64
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	// Rows below the acknowledged row's transaction are deleted; the rest
	// wait for their acknowledgement.
	if n != 5 || left != 5 {
		t.Fatalf("cleanup deleted %d and left %d rows; want 5 and 5", n, left)
	}
	keep := s.NewCleaner(s.PollCleanupHorizon("clean"), postgres.CleanupConfig{Retention: time.Hour})
	if n, err := keep.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("cleanup deleted %d rows inside their retention (%v)", n, err)
	}
}

func TestOrderWritesAreAtomicAndVersionChecked(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	svc := order.NewService(s.Orders())
	o, _, err := svc.Create(ctx, order.CreateInput{CustomerID: "c", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}}}, order.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	// A writer that read version 1 after another moved it to 2 must fail
	// and write neither the row nor an event.
	addr := "x"
	if _, err := svc.Update(ctx, o.ID, order.UpdateInput{Address: &addr}, 1, order.Meta{}); err != nil {
		t.Fatal(err)
	}
	stale := o
	stale.Version, stale.Address = 2, "stale"
	ev, err := outbox.NewMessage(order.AggregateType, o.ID, order.EventUpdated, 2, map[string]string{"a": "stale"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Orders().Update(ctx, stale, ev); !errors.Is(err, order.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	orders, events, err := s.CountRows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if orders != 1 || events != 2 || got.Address != "x" || got.Version != 2 {
		t.Fatalf("after a refused update: %d orders, %d events, order %+v", orders, events, got)
	}
	// Idempotency keys take the transactional path.
	in := order.CreateInput{CustomerID: "k", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}}}
	a, _, err := svc.Create(ctx, in, order.Meta{IdempotencyKey: "key"})
	if err != nil {
		t.Fatal(err)
	}
	b, replayed, err := svc.Create(ctx, in, order.Meta{IdempotencyKey: "key"})
	if err != nil || !replayed || b.ID != a.ID {
		t.Fatalf("replayed create: %v %v %v", b.ID, replayed, err)
	}
	if _, events, err := s.CountRows(ctx); err != nil || events != 3 {
		t.Fatalf("%d events after a create and its replay, want 3", events)
	}
}
