package retry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

func TestDefaultScheduleIsTheDesigns(t *testing.T) {
	p := retry.Default()
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}
	for n := 1; n <= 5; n++ {
		if got := p.Delay(n); got != want[n] {
			t.Errorf("delay before attempt %d = %s, want %s", n, got, want[n])
		}
	}
}

func TestDoWaitsTheScheduleThenGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		transient := errors.New("broker unavailable")
		n, err := retry.Default().Do(t.Context(), func(context.Context) error {
			at = append(at, time.Since(start))
			return transient
		}, nil)
		if n != 5 || !errors.Is(err, transient) {
			t.Fatalf("attempts %d err %v, want 5 and the last error", n, err)
		}
		want := []time.Duration{0, 100, 300, 700, 1200}
		if len(at) != len(want) {
			t.Fatalf("%d attempts, want %d", len(at), len(want))
		}
		for i, w := range want {
			if at[i] != w*time.Millisecond {
				t.Errorf("attempt %d at %s, want %dms", i+1, at[i], w)
			}
		}
	})
}

func TestDoStopsOnPermanentAndSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		n, err := retry.Default().Do(t.Context(), func(context.Context) error {
			calls++
			return outbox.Permanent(errors.New("message too large"))
		}, nil)
		if n != 1 || calls != 1 || !outbox.IsPermanent(err) {
			t.Fatalf("permanent: attempts %d calls %d err %v", n, calls, err)
		}
		var retried []retry.Attempt
		n, err = retry.Default().Do(t.Context(), func(context.Context) error {
			if len(retried) < 2 {
				return errors.New("blip")
			}
			return nil
		}, func(a retry.Attempt) { retried = append(retried, a) })
		if n != 3 || err != nil || len(retried) != 2 || retried[1].Delay != 200*time.Millisecond {
			t.Fatalf("success on third: attempts %d err %v retried %+v", n, err, retried)
		}
	})
}

func TestDoEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
		defer cancel()
		start := time.Now()
		n, err := retry.Default().Do(ctx, func(context.Context) error { return errors.New("down") }, nil)
		if !errors.Is(err, context.DeadlineExceeded) || n != 2 || time.Since(start) != 250*time.Millisecond {
			t.Fatalf("attempts %d err %v after %s", n, err, time.Since(start))
		}
	})
}

// Jitter spreads each wait over ±Jitter of the schedule's delay, and Do
// waits the jittered delay it reports. The bases are the design's own
// figures, not p.Delay's, so a schedule of zero delays cannot pass; many
// runs must reach both ends of the spread, so ignored jitter cannot pass.
func TestJitterSpreadsEachWaitWithinBounds(t *testing.T) {
	base := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}
	for _, tc := range []struct {
		name   string
		jitter float64
	}{
		{"none", 0},
		{"a fifth", 0.2},
		{"half", 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := retry.Default()
				p.Jitter = tc.jitter
				const runs = 200
				lo, hi := make([]time.Duration, len(base)), make([]time.Duration, len(base))
				for run := range runs {
					var delays, waited []time.Duration
					last := time.Now()
					n, err := p.Do(t.Context(), func(context.Context) error {
						if now := time.Now(); len(delays) > 0 {
							waited = append(waited, now.Sub(last))
						}
						last = time.Now()
						return errors.New("x")
					}, func(a retry.Attempt) { delays = append(delays, a.Delay) })
					if n != 5 || err == nil || len(delays) != len(base) || len(waited) != len(base) {
						t.Fatalf("run %d: %d attempts (%v), %d delays reported, %d waits; want 5 attempts and 4 of each", run, n, err, len(delays), len(waited))
					}
					for i, d := range delays {
						if waited[i] != d {
							t.Fatalf("run %d: waited %s before attempt %d, but reported a delay of %s", run, waited[i], i+2, d)
						}
						spread := time.Duration(float64(base[i]) * tc.jitter)
						if d < base[i]-spread || d > base[i]+spread {
							t.Fatalf("run %d: delay before attempt %d is %s, outside %s ± %s", run, i+2, d, base[i], spread)
						}
						if run == 0 || d < lo[i] {
							lo[i] = d
						}
						if run == 0 || d > hi[i] {
							hi[i] = d
						}
					}
				}
				for i := range base {
					half := time.Duration(float64(base[i]) * tc.jitter / 2)
					if tc.jitter == 0 && (lo[i] != base[i] || hi[i] != base[i]) {
						t.Errorf("without jitter the delay before attempt %d ranged %s..%s, want exactly %s", i+2, lo[i], hi[i], base[i])
					}
					// Each end of the spread's outer halves is hit with
					// probability 1/4 a run: missing it in 200 runs is ~1e-25.
					if tc.jitter > 0 && (lo[i] >= base[i]-half || hi[i] <= base[i]+half) {
						t.Errorf("delay before attempt %d ranged %s..%s over %d runs: jitter %g of %s is not applied", i+2, lo[i], hi[i], runs, tc.jitter, base[i])
					}
				}
			})
		})
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     retry.Policy
		field string
	}{
		{"zero attempts", retry.Policy{MaxAttempts: 0, InitialDelay: time.Millisecond, Multiplier: 2, MaxDelay: time.Second}, "MaxAttempts"},
		{"negative attempts", retry.Policy{MaxAttempts: -1, Multiplier: 2}, "MaxAttempts"},
		{"negative delay", retry.Policy{MaxAttempts: 3, InitialDelay: -time.Second, Multiplier: 2}, "InitialDelay"},
		{"negative max", retry.Policy{MaxAttempts: 3, MaxDelay: -1, Multiplier: 2}, "MaxDelay"},
		{"shrinking", retry.Policy{MaxAttempts: 3, InitialDelay: time.Second, MaxDelay: time.Second, Multiplier: 0.5}, "Multiplier"},
		{"jitter", retry.Policy{MaxAttempts: 3, Multiplier: 2, Jitter: 2}, "Jitter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if !errors.Is(err, retry.ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.field)
			}
		})
	}
	if err := retry.Default().Validate(); err != nil {
		t.Fatalf("default policy invalid: %v", err)
	}
}
