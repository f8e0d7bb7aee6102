package supervise_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
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
