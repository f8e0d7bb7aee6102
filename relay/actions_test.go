package relay_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
)

// An operator skips e1; the republish of e2 is then interrupted (the
// broker is down and the relay stops). Run again after the restart, the
// still-pending request must skip e1 only: e2 and e3 are published.
func TestInterruptedSkipSkipsOnlyTheEntryItNamed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: poisonFor("p", 1)}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		stop := serve(t, r)
		for i := range 3 {
			w.write("order", "p", i)
		}
		settle(t, 10*time.Second, func() bool { return r.Stats().DeadLettered == 3 })
		key := outbox.AggregateKey{Type: "order", ID: "p"}
		parked, _ := s.ParkedMessages(t.Context(), key)

		pub.setFail(func(outbox.Message) error { return errors.New("broker down") })
		plan, err := dlq.Request(t.Context(), s, key, outbox.ActionSkip, dlq.RequestOptions{Entry: parked[0].ID, Reason: "poison"})
		if err != nil || plan.Entry != parked[0].ID {
			t.Fatalf("skip plan %+v %v", plan, err)
		}
		r.Poke()
		settle(t, 10*time.Second, func() bool {
			d, _ := s.GetDeadLetter(t.Context(), parked[0].ID)
			return d.Status == outbox.StatusSkipped
		})
		pass(2 * time.Second) // the republish of e2 fails round after round
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if agg, _ := s.ParkedAggregates(t.Context()); len(agg) != 1 || agg[0].Pending != outbox.ActionSkip {
			t.Fatalf("the interrupted request must still be pending: %+v", agg)
		}

		pub.setFail(nil)
		r2 := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r2)
		settle(t, 10*time.Second, func() bool { return r2.Stats().Parked == 0 && len(pub.published()) == 2 })
		for i, id := range []int64{parked[0].ID, parked[1].ID, parked[2].ID} {
			d, _ := s.GetDeadLetter(t.Context(), id)
			want := outbox.StatusReplayed
			if i == 0 {
				want = outbox.StatusSkipped
			}
			if d.Status != want {
				t.Errorf("entry %d (e%d): %s, want %s", id, i+1, d.Status, want)
			}
		}
		rep := checker.Check(w.rec.History(), pub.observed(), deadLetteredIDs(t, s))
		if !rep.OK() || rep.Published != 2 {
			t.Fatalf("after the interrupted skip: %s", rep)
		}
	})
}

// A skip must name the aggregate's failed message; a request naming
// another entry, or one the store lost the entry of, is refused and
// leaves the aggregate parked.
func TestSkipRequestsAreCheckedAgainstTheirEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &fakePublisher{fail: poisonFor("p", 1)}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		for i := range 2 {
			w.write("order", "p", i)
		}
		settle(t, 10*time.Second, func() bool { return r.Stats().DeadLettered == 2 })
		key := outbox.AggregateKey{Type: "order", ID: "p"}
		parked, _ := s.ParkedMessages(t.Context(), key)
		if _, err := dlq.Request(t.Context(), s, key, outbox.ActionSkip, dlq.RequestOptions{Entry: parked[1].ID}); !errors.Is(err, dlq.ErrNotFirst) {
			t.Fatalf("skip of the second entry: %v, want ErrNotFirst", err)
		}
		if _, err := dlq.Request(t.Context(), s, key, outbox.ActionReplay, dlq.RequestOptions{Entry: 999}); !errors.Is(err, outbox.ErrNotParked) {
			t.Fatalf("replay naming an unknown entry: %v, want ErrNotParked", err)
		}
		// A request written straight to the store that names the second
		// entry is refused by the relay, not carried out on the first.
		if err := s.RequestAction(t.Context(), key, outbox.ActionRequest{Action: outbox.ActionSkip, Entry: parked[1].ID}); err != nil {
			t.Fatal(err)
		}
		r.Poke()
		settle(t, 10*time.Second, func() bool {
			agg, _ := s.ParkedAggregates(t.Context())
			return len(agg) == 1 && agg[0].Pending == "" && agg[0].LastError != ""
		})
		for _, d := range parked {
			if got, _ := s.GetDeadLetter(t.Context(), d.ID); got.Status != outbox.StatusParked {
				t.Fatalf("entry %d is %s after a refused skip", d.ID, got.Status)
			}
		}
		if len(pub.published()) != 0 {
			t.Fatalf("published %d after a refused skip", len(pub.published()))
		}
	})
}
