package sqlite_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

var keyInput = order.CreateInput{CustomerID: "c", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}}}

// createAt stores an order under key as if its request had arrived at at:
// the service stamps keys with the wall clock, so the repository is called
// directly to put keys in the past.
func createAt(t *testing.T, repo order.Repository, id, key string, at time.Time) {
	t.Helper()
	o := order.Order{ID: id, CustomerID: "c", Items: keyInput.Items, Currency: "EUR", Status: order.StatusPending, Total: 5, Version: 1, CreatedAt: at, UpdatedAt: at}
	ev, err := outbox.NewMessage(order.AggregateType, id, order.EventCreated, 1, map[string]string{"id": id})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Create(t.Context(), o, ev, key, "hash-"+key); err != nil {
		t.Fatal(err)
	}
}

func countKeys(t *testing.T, s *sqlite.Store) (keys, orders int) {
	t.Helper()
	if err := s.DB().QueryRowContext(t.Context(), `SELECT (SELECT count(*) FROM order_idempotency_keys), (SELECT count(*) FROM orders)`).Scan(&keys, &orders); err != nil {
		t.Fatal(err)
	}
	return keys, orders
}

func TestIdempotencyKeysExpireInBatches(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	svc := order.NewService(s.Orders())
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range 5 {
		createAt(t, s.Orders(), fmt.Sprintf("old-%d", i), fmt.Sprintf("old-key-%d", i), now.Add(-25*time.Hour))
	}
	kept, _, err := svc.Create(ctx, keyInput, order.Meta{IdempotencyKey: "young"})
	if err != nil {
		t.Fatal(err)
	}
	var batches []int64
	clock := now
	cleaner, err := s.NewKeyCleaner(sqlite.KeyCleanerConfig{
		BatchSize: 2,
		Now:       func() time.Time { return clock },
		OnBatch:   func(n int64) { batches = append(batches, n) },
	})
	if err != nil {
		t.Fatal(err)
	}

	n, err := cleaner.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Five expired keys with room for two per statement: three statements,
	// none of which deleted them all.
	if n != 5 || fmt.Sprint(batches) != "[2 2 1]" {
		t.Fatalf("deleted %d keys in batches %v; want 5 in [2 2 1]", n, batches)
	}
	if keys, orders := countKeys(t, s); keys != 1 || orders != 6 {
		t.Fatalf("after expiry: %d keys and %d orders; want 1 key (the young one) and all 6 orders", keys, orders)
	}
	if _, err := svc.Get(ctx, "old-0"); err != nil {
		t.Fatalf("an expired key took its order with it: %v", err)
	}

	again, replayed, err := svc.Create(ctx, keyInput, order.Meta{IdempotencyKey: "young"})
	if err != nil || !replayed || again.ID != kept.ID {
		t.Fatalf("replay inside the window: order %s replayed=%v err=%v; want order %s replayed", again.ID, replayed, err, kept.ID)
	}

	clock = now.Add(24*time.Hour + time.Second)
	batches = nil
	if n, err := cleaner.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("the young key past the window: deleted %d, %v; want 1", n, err)
	}
	fresh, replayed, err := svc.Create(ctx, keyInput, order.Meta{IdempotencyKey: "young"})
	if err != nil || replayed || fresh.ID == kept.ID {
		t.Fatalf("retry after the window: order %s replayed=%v err=%v; want a new order", fresh.ID, replayed, err)
	}
	if keys, orders := countKeys(t, s); keys != 1 || orders != 7 {
		t.Fatalf("after the retry: %d keys and %d orders; want 1 and 7", keys, orders)
	}
}

func TestKeyCleanerServesUntilCancelled(t *testing.T) {
	s := open(t)
	createAt(t, s.Orders(), "old", "old-key", time.Now().Add(-48*time.Hour))
	// An hour-long interval: only the round Serve runs when it starts can
	// delete the key within the test.
	cleaner, err := s.NewKeyCleaner(sqlite.KeyCleanerConfig{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Serve(t, cleaner)
	testenv.Eventually(t, 5*time.Second, "expired key deleted", func() bool {
		keys, _ := countKeys(t, s)
		return keys == 0
	})
	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v when its context ended; want nil", err)
	}
}

func TestKeyQueriesUseIndexes(t *testing.T) {
	s := open(t)
	for _, tc := range []struct {
		name, query, index string
	}{
		{"lookup by key", `SELECT request_hash, order_id FROM order_idempotency_keys WHERE key = ?`, "sqlite_autoindex_order_idempotency_keys_1"},
		{"expiry by age", `SELECT key FROM order_idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?`, "order_idempotency_keys_created_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := s.DB().QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+tc.query, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if got := strings.Join(plan, "; "); !strings.Contains(got, "USING INDEX "+tc.index) && !strings.Contains(got, "USING COVERING INDEX "+tc.index) {
				t.Fatalf("plan %q does not use index %s", got, tc.index)
			}
		})
	}
}

func TestKeyCleanerConfigRejectsNegatives(t *testing.T) {
	s := open(t)
	for _, tc := range []struct {
		name  string
		cfg   sqlite.KeyCleanerConfig
		field string
	}{
		{"retention", sqlite.KeyCleanerConfig{Retention: -time.Hour}, "Retention"},
		{"interval", sqlite.KeyCleanerConfig{Interval: -time.Second}, "Interval"},
		{"batch size", sqlite.KeyCleanerConfig{BatchSize: -1}, "BatchSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.NewKeyCleaner(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("NewKeyCleaner: %v, want an error naming %s", err, tc.field)
			}
		})
	}
	if _, err := s.NewKeyCleaner(sqlite.KeyCleanerConfig{}); err != nil {
		t.Fatalf("the zero config: %v", err)
	}
}

var _ interface{ Serve(context.Context) error } = (*sqlite.KeyCleaner)(nil)
