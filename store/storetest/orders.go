package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// RunOrders runs the order repository's part of the suite; newHarness
// must return an empty store with Orders and Source set.
func RunOrders(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("ConcurrentOrderUpdates", func(t *testing.T) { testConcurrentOrderUpdates(t, newHarness(t)) })
}

// Two writers that read version N of an order cannot both commit N+1:
// each round starts several updates from the same version at once (a
// barrier releases them together); exactly one succeeds, every other one
// fails with order.ErrConflict, the order holds the winner's change, and
// the outbox holds exactly one event per version, the winner's.
func testConcurrentOrderUpdates(t *testing.T, h Harness) {
	if h.Orders == nil || h.Source == nil {
		t.Fatal("RunOrders needs a harness with Orders and Source")
	}
	c := ctx(t)
	svc := order.NewService(h.Orders)
	o, _, err := svc.Create(c, order.CreateInput{CustomerID: "c1", Currency: "EUR",
		Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 100}}}, order.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	const rounds, writers = 10, 4
	winners := map[int64]string{1: ""} // version → the event id that must carry it
	for round := range rounds {
		next := o.Version + 1
		start := make(chan struct{})
		errs := make([]error, writers)
		events := make([]outbox.Message, writers)
		var wg sync.WaitGroup
		for w := range writers {
			changed := o
			changed.Version = next
			changed.Address = fmt.Sprintf("round %d writer %d", round, w)
			changed.UpdatedAt = time.Now().UTC().Truncate(time.Microsecond)
			ev, err := outbox.NewMessage(order.AggregateType, o.ID, order.EventUpdated, next, map[string]string{"address": changed.Address})
			if err != nil {
				t.Fatal(err)
			}
			events[w] = ev
			wg.Go(func() {
				<-start
				errs[w] = h.Orders.Update(c, changed, ev)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both committed version %d", round, winner, w, next)
			case err == nil:
				winner = w
			case !errors.Is(err, order.ErrConflict):
				t.Fatalf("round %d: writer %d failed with %v, want order.ErrConflict", round, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer committed version %d: %v", round, next, errs)
		}
		winners[next] = events[winner].ID.String()
		if o, err = h.Orders.Get(c, o.ID); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("round %d writer %d", round, winner); o.Version != next || o.Address != want {
			t.Fatalf("round %d: order at version %d with address %q, want %d and %q", round, o.Version, o.Address, next, want)
		}
	}
	recs, _ := readAll(t, h)
	perVersion := map[int64][]string{}
	for _, r := range recs {
		if r.Message.AggregateID == o.ID {
			perVersion[r.Message.Sequence] = append(perVersion[r.Message.Sequence], r.Message.ID.String())
		}
	}
	if len(perVersion) != rounds+1 {
		t.Errorf("events for %d versions, want %d", len(perVersion), rounds+1)
	}
	for v := int64(1); v <= rounds+1; v++ {
		ids := perVersion[v]
		if len(ids) != 1 || (winners[v] != "" && ids[0] != winners[v]) {
			t.Errorf("version %d: events %v, want exactly the winner's %s", v, ids, winners[v])
		}
	}
}
