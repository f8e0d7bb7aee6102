package order_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/store/sqlite"
)

func newService(t *testing.T) (*order.Service, *sqlite.Store) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "o.db"), sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return order.NewService(s.Orders()), s
}

func validInput() order.CreateInput {
	return order.CreateInput{CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "sku-1", Quantity: 2, UnitPrice: 1250}, {SKU: "sku-2", Quantity: 1, UnitPrice: 99}}}
}

func events(t *testing.T, s *sqlite.Store) []string {
	t.Helper()
	recs, err := s.Fetch(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Message.Type)
	}
	return out
}

func TestLifecycleWritesOneEventPerChange(t *testing.T) {
	svc, s := newService(t)
	ctx := context.Background()
	o, replayed, err := svc.Create(ctx, validInput(), order.Meta{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	if err != nil || replayed {
		t.Fatal(err)
	}
	if o.Total != 2599 || o.Version != 1 || o.Status != order.StatusPending {
		t.Fatalf("created %+v", o)
	}
	addr := "1 Main St"
	o, err = svc.Update(ctx, o.ID, order.UpdateInput{Address: &addr}, 1, order.Meta{})
	if err != nil || o.Version != 2 || o.Address != addr {
		t.Fatalf("update: %+v %v", o, err)
	}
	if _, err := svc.Update(ctx, o.ID, order.UpdateInput{Address: &addr}, 1, order.Meta{}); !errors.Is(err, order.ErrConflict) {
		t.Fatalf("stale If-Match: %v, want ErrConflict", err)
	}
	o, err = svc.Cancel(ctx, o.ID, 0, order.Meta{})
	if err != nil || o.Status != order.StatusCancelled || o.Version != 3 {
		t.Fatalf("cancel: %+v %v", o, err)
	}
	if _, err := svc.Update(ctx, o.ID, order.UpdateInput{Address: &addr}, 0, order.Meta{}); !errors.Is(err, order.ErrCancelled) {
		t.Fatalf("update of a cancelled order: %v", err)
	}
	if _, err := svc.Cancel(ctx, o.ID, 0, order.Meta{}); !errors.Is(err, order.ErrCancelled) {
		t.Fatalf("second cancel: %v", err)
	}
	got, err := svc.Get(ctx, o.ID)
	if err != nil || got.Version != 3 || got.Items[0].SKU != "sku-1" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if ev := strings.Join(events(t, s), ","); ev != "OrderCreated,OrderUpdated,OrderCancelled" {
		t.Fatalf("events %s", ev)
	}
	recs, _ := s.Fetch(ctx, "", 10)
	if recs[0].Message.Headers["traceparent"] == "" || recs[2].Message.Sequence != 3 || recs[0].Message.AggregateID != o.ID {
		t.Fatalf("event metadata: %+v", recs[0].Message)
	}
	if _, err := svc.Get(ctx, "nope"); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	svc, s := newService(t)
	ctx := context.Background()
	a, replayed, err := svc.Create(ctx, validInput(), order.Meta{IdempotencyKey: "k1"})
	if err != nil || replayed {
		t.Fatal(err)
	}
	b, replayed, err := svc.Create(ctx, validInput(), order.Meta{IdempotencyKey: "k1"})
	if err != nil || !replayed || b.ID != a.ID {
		t.Fatalf("same key: %+v replayed=%v %v", b, replayed, err)
	}
	other := validInput()
	other.Currency = "USD"
	if _, _, err := svc.Create(ctx, other, order.Meta{IdempotencyKey: "k1"}); !errors.Is(err, order.ErrIdempotencyKey) {
		t.Fatalf("same key, other body: %v", err)
	}
	if orders, evs, _ := labstore.CountRows(ctx, s); orders != 1 || evs != 1 {
		t.Fatalf("%d orders and %d events after one create and two repeats", orders, evs)
	}
}

func TestValidation(t *testing.T) {
	long := strings.Repeat("x", 600)
	for _, tc := range []struct {
		field string
		edit  func(*order.CreateInput)
	}{
		{"customer_id", func(in *order.CreateInput) { in.CustomerID = "" }},
		{"customer_id", func(in *order.CreateInput) { in.CustomerID = long }},
		{"customer_id", func(in *order.CreateInput) { in.CustomerID = "a\x00b" }},
		{"items", func(in *order.CreateInput) { in.Items = nil }},
		{"items", func(in *order.CreateInput) { in.Items = make([]order.Item, order.MaxItems+1) }},
		{"items[0].sku", func(in *order.CreateInput) { in.Items[0].SKU = "" }},
		{"items[0].quantity", func(in *order.CreateInput) { in.Items[0].Quantity = 0 }},
		{"items[1].quantity", func(in *order.CreateInput) { in.Items[1].Quantity = order.MaxQuantity + 1 }},
		{"items[0].unit_price", func(in *order.CreateInput) { in.Items[0].UnitPrice = -1 }},
		{"currency", func(in *order.CreateInput) { in.Currency = "euro" }},
		{"address", func(in *order.CreateInput) { in.Address = long }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			in := validInput()
			tc.edit(&in)
			var ve *order.ValidationError
			if err := in.Validate(); !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("Validate() = %v, want a ValidationError on %s", err, tc.field)
			}
			// A sentence: the field, then why; no stray colon.
			if err := in.Validate(); err.Error() != tc.field+" "+ve.Reason || strings.Contains(err.Error(), ":") {
				t.Errorf("Validate() says %q", err)
			}
		})
	}
	if err := (order.CreateInput{CustomerID: "c", Currency: "EUR", Items: []order.Item{{Quantity: 1}}}).Validate(); err == nil || err.Error() != "items[0].sku is required" {
		t.Errorf("an item without a sku: %v, want items[0].sku is required", err)
	}
	var ve *order.ValidationError
	if err := (order.UpdateInput{}).Validate(); !errors.As(err, &ve) ||
		err.Error() != "items must be given when address is not (an update changes at least one)" {
		t.Fatalf("empty update: %v", err)
	}
}
