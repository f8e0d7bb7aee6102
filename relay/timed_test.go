package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/outbox"
)

// An attempt ends at PublishTimeout at the soonest, a sixteenth later at
// the latest (plus scheduling), however many attempts share the deadline,
// and ends at once when the caller's context does.
func TestTimedBoundsEachAttempt(t *testing.T) {
	const timeout = 160 * time.Millisecond
	r := &run{Relay: &Relay{cfg: Config{PublishTimeout: timeout}}}
	block := single(r.timed(func(ctx context.Context, _ [][]outbox.Message, res []outbox.RunResult) {
		<-ctx.Done()
		res[0].Err = ctx.Err()
	}))
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if i > 0 { // later attempts, some sharing the first's deadline
				<-time.After(time.Duration(i) * 7 * time.Millisecond)
			}
			start := time.Now()
			_, err := block(parent, []outbox.Message{{}})
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || took < timeout || took > timeout+timeout/16+100*time.Millisecond {
				t.Errorf("attempt %d: %v after %s, want a deadline between %s and %s", i, err, took, timeout, timeout+timeout/16)
			}
		})
	}
	wg.Wait()

	other, cancelOther := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := block(other, nil); done <- err }()
	cancelOther()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("caller's context canceled: %v, want context.Canceled", err)
		}
	case <-time.After(timeout / 2):
		t.Fatal("the attempt did not end with its caller's context")
	}
}

// BenchmarkTimedAttempt compares, in the same run, the cost of bounding
// each attempt with a context.WithTimeout of its own (before) with the
// shared deadline timed uses (after), from 256 goroutines as the relay's
// workers:
//
//	go test ./relay -run '^$' -bench TimedAttempt
func BenchmarkTimedAttempt(b *testing.B) {
	noop := func(ctx context.Context, runs [][]outbox.Message, res []outbox.RunResult) {
		res[0] = outbox.RunResult{Acked: len(runs[0]), Err: ctx.Err()}
	}
	perAttempt := func(ctx context.Context, runs [][]outbox.Message, res []outbox.RunResult) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		noop(ctx, runs, res)
	}
	shared := (&run{Relay: &Relay{cfg: Config{PublishTimeout: 10 * time.Second}}}).timed(noop)
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs := []outbox.Message{{}}
	measure := func(send sendFunc) time.Duration {
		send1 := single(send)
		start := time.Now()
		b.SetParallelism(128) // 256 goroutines on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send1(parent, msgs)
			}
		})
		return time.Since(start)
	}
	before, after := measure(perAttempt), measure(shared)
	b.ReportMetric(float64(before.Nanoseconds())/float64(b.N), "before-ns/attempt")
	b.ReportMetric(float64(after.Nanoseconds())/float64(b.N), "after-ns/attempt")
	b.ReportMetric(float64(after)/float64(before), "after/before")
}

// single is send for one run.
func single(send sendFunc) func(context.Context, []outbox.Message) (int, error) {
	return func(ctx context.Context, msgs []outbox.Message) (int, error) {
		var res [1]outbox.RunResult
		send(ctx, [][]outbox.Message{msgs}, res[:])
		return res[0].Acked, res[0].Err
	}
}

// What the breaker hears of a group's attempt: success when any run was
// acknowledged in part; otherwise a transient error before a permanent one
// (the breaker counts a permanent refusal, an answer, as a success).
func TestFirstFailure(t *testing.T) {
	transient, permanent := errors.New("no answer"), outbox.Permanent(errors.New("too large"))
	for _, tc := range []struct {
		name    string
		results []outbox.RunResult
		want    error
	}{
		{"one acknowledged after a failure", []outbox.RunResult{{Err: transient}, {Acked: 1}}, nil},
		{"a transient error after a permanent one", []outbox.RunResult{{Err: permanent}, {Err: transient}}, transient},
		{"only permanent errors", []outbox.RunResult{{Err: permanent}, {Err: permanent}}, permanent},
		{"one still in flight before a permanent error", []outbox.RunResult{{Err: fmt.Errorf("x: %w", outbox.ErrInFlight)}, {Err: permanent}}, permanent},
	} {
		if got := firstFailure(tc.results); !errors.Is(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
