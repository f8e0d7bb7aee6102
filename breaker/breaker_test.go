package breaker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
)

var errDown = errors.New("broker down")

// elapse advances the bubble's fake clock by d.
func elapse(d time.Duration) { <-time.After(d) }

func TestDesignStateMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var transitions []string
		b, err := breaker.New(breaker.Config{OnStateChange: func(from, to breaker.State) {
			transitions = append(transitions, from.String()+">"+to.String())
		}})
		if err != nil {
			t.Fatal(err)
		}
		fail := func() error { return errDown }
		ok := func() error { return nil }
		for i := range 4 {
			b.Do(fail)
			if b.State() != breaker.Closed {
				t.Fatalf("open after %d failures, want 5", i+1)
			}
		}
		b.Do(fail)
		if b.State() != breaker.Open {
			t.Fatal("not open after 5 consecutive failures")
		}
		called := false
		if err := b.Do(func() error { called = true; return nil }); !errors.Is(err, breaker.ErrOpen) || called {
			t.Fatalf("open breaker let a call through (err %v)", err)
		}
		elapse(29 * time.Second)
		if b.State() != breaker.Open {
			t.Fatal("half-open before 30 s")
		}
		elapse(time.Second + time.Millisecond)
		if b.State() != breaker.HalfOpen {
			t.Fatalf("state after 30 s = %s, want half-open", b.State())
		}
		b.Do(ok)
		b.Do(ok)
		if b.State() != breaker.HalfOpen {
			t.Fatal("closed after 2 half-open successes, want 3")
		}
		b.Do(ok)
		if b.State() != breaker.Closed {
			t.Fatal("not closed after 3 half-open successes")
		}
		for range 5 {
			b.Do(fail)
		}
		elapse(30*time.Second + time.Millisecond)
		b.Do(ok)
		b.Do(fail)
		if b.State() != breaker.Open {
			t.Fatal("a half-open failure did not reopen the breaker")
		}
		want := []string{"closed>open", "open>half-open", "half-open>closed", "closed>open", "open>half-open", "half-open>open"}
		if len(transitions) != len(want) {
			t.Fatalf("transitions %v, want %v", transitions, want)
		}
		for i := range want {
			if transitions[i] != want[i] {
				t.Fatalf("transitions %v, want %v", transitions, want)
			}
		}
	})
}

func TestPermanentFailuresDoNotTrip(t *testing.T) {
	b, _ := breaker.New(breaker.Config{})
	for range 20 {
		b.Do(func() error { return outbox.Permanent(errors.New("too large")) })
	}
	if b.State() != breaker.Closed {
		t.Fatal("permanent failures opened the breaker: the broker is answering")
	}
}

func TestWaitUntilCallable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := breaker.New(breaker.Config{OpenTimeout: 10 * time.Second})
		for range 5 {
			b.Do(func() error { return errDown })
		}
		start := time.Now()
		if err := b.WaitUntilCallable(t.Context()); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 10*time.Second || waited > 10*time.Second+10*time.Millisecond {
			t.Fatalf("waited %s, want the 10 s open timeout", waited)
		}
		if b.State() != breaker.HalfOpen {
			t.Fatalf("state %s, want half-open", b.State())
		}
	})
}

func TestTripOpensAtOnceAndResetClosesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var transitions []string
		b, err := breaker.New(breaker.Config{OnStateChange: func(from, to breaker.State) {
			transitions = append(transitions, from.String()+">"+to.String())
		}})
		if err != nil {
			t.Fatal(err)
		}
		b.Do(func() error { return errDown }) // one failure counted before the trip
		b.Trip()
		if b.State() != breaker.Open {
			t.Fatalf("state after Trip = %s, want open", b.State())
		}
		b.Trip() // already open: no second transition, no new open time
		waited := make(chan struct{})
		go func() {
			b.WaitUntilCallable(context.Background())
			close(waited)
		}()
		elapse(5 * time.Second)
		select {
		case <-waited:
			t.Fatal("WaitUntilCallable returned while open")
		default:
		}
		b.Reset()
		synctest.Wait()
		select {
		case <-waited:
		default:
			t.Fatal("Reset did not wake a waiter")
		}
		if b.State() != breaker.Closed {
			t.Fatalf("state after Reset = %s, want closed", b.State())
		}
		// Fresh counts after a reset: four failures do not open it.
		for range 4 {
			b.Do(func() error { return errDown })
		}
		if b.State() != breaker.Closed {
			t.Fatal("a reset breaker kept its old failure count")
		}
		b.Do(func() error { return errDown })
		if b.State() != breaker.Open {
			t.Fatal("threshold no longer opens a reset breaker")
		}
		// A trip while half-open reopens it for the whole timeout.
		elapse(30*time.Second + time.Millisecond)
		if b.State() != breaker.HalfOpen {
			t.Fatalf("state %s, want half-open", b.State())
		}
		b.Trip()
		elapse(29 * time.Second)
		if b.State() != breaker.Open {
			t.Fatal("a trip from half-open did not restart the open timeout")
		}
		want := []string{"closed>open", "open>closed", "closed>open", "open>half-open", "half-open>open"}
		if !slices.Equal(transitions, want) {
			t.Fatalf("transitions %v, want %v", transitions, want)
		}
	})
}
