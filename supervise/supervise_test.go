package supervise_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/supervise"
)

// flaky panics or fails a given number of times, then serves.
type flaky struct {
	panics, errs atomic.Int64
	serving      atomic.Bool
}

func (f *flaky) Serve(ctx context.Context) error {
	if f.panics.Add(-1) >= 0 {
		panic("boom")
	}
	if f.errs.Add(-1) >= 0 {
		return errors.New("lost connection")
	}
	f.serving.Store(true)
	<-ctx.Done()
	return nil
}

type steady struct{ starts atomic.Int64 }

func (s *steady) Serve(ctx context.Context) error {
	s.starts.Add(1)
	<-ctx.Done()
	return nil
}

func TestOnlyTheFailingWorkerRestarts(t *testing.T) {
	var heard atomic.Int64
	tree := supervise.New(supervise.Config{RestartBackoff: 10 * time.Millisecond, OnRestart: func(string) { heard.Add(1) }})
	bad, good := &flaky{}, &steady{}
	bad.panics.Store(2)
	bad.errs.Store(1)
	tree.Add("bad", bad)
	tree.Add("good", good)
	stop := testenv.Serve(t, tree)
	testenv.Eventually(t, 10*time.Second, "the bad worker serves after its failures", bad.serving.Load)
	r := tree.Restarts()
	if r["bad"] != 3 || r["good"] != 0 || heard.Load() != 3 || good.starts.Load() != 1 {
		t.Fatalf("restarts %v (heard %d), good started %d times", r, heard.Load(), good.starts.Load())
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve after a clean stop: %v", err)
	}
	if got := tree.Workers(); len(got) != 2 || got[0] != "bad" {
		t.Fatalf("workers %v", got)
	}
}

// fatal fails once with an error no restart can cure.
type fatal struct{ starts atomic.Int64 }

func (f *fatal) Serve(context.Context) error {
	f.starts.Add(1)
	return fmt.Errorf("open source: %w", outbox.Fatal(errors.New("slot outbox_relay is missing")))
}

// A fatal error ends the whole tree with that error, after stopping the
// other workers; nothing is restarted.
func TestFatalErrorEndsTheTreeWithItsMessage(t *testing.T) {
	tree := supervise.New(supervise.Config{RestartBackoff: 10 * time.Millisecond})
	bad, good := &fatal{}, &steady{}
	tree.Add("relay", bad)
	tree.Add("health", good)
	done := make(chan error, 1)
	go func() { done <- tree.Serve(context.Background()) }()
	select {
	case err := <-done:
		if !outbox.IsFatal(err) || !strings.Contains(err.Error(), "open source: slot outbox_relay is missing") {
			t.Fatalf("Serve() = %v, want the relay's fatal error", err)
		}
		if strings.Contains(err.Error(), "terminated") {
			t.Fatalf("message %q carries suture's wording", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tree kept running after a fatal error")
	}
	if n := bad.starts.Load(); n != 1 {
		t.Fatalf("the fatal worker started %d times, want once", n)
	}
	if r := tree.Restarts()["relay"]; r != 0 {
		t.Fatalf("%d restarts recorded for a fatal error", r)
	}
}
