package chaos

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/outbox-dev/outbox/checker"
)

// progressFailed is the line scripts/mutants.sh greps for (chaos_failures).
var progressFailed = regexp.MustCompile(`^chaos: [a-z+-]+ R[0-9]+ FAILED: .+`)

// The results table fits in 120 columns, each scenario's line starts with
// its verdict, and the last line is the run's verdict.
func TestChaosTableIsNarrowVerdictFirstWithAnOverallLine(t *testing.T) {
	r2 := &scenarioResult{ID: "R2", Name: "relay SIGKILLed at random moments", Target: "sqlite+kfake", Seconds: 12.3,
		Report: checker.Report{Dup: 12, MaxCopies: 2},
		Figures: map[string]any{"dup_bound": "records published but not checkpointed at a kill (≤ 1,024 in flight)", "events": 4000,
			"kills": 5, "recovery_max_ms": 31, "recovery_p50_ms": 15}}
	r7 := &scenarioResult{ID: "R7", Name: "slow broker (latency, bandwidth)", Target: "sqlite+kfake", Seconds: 8,
		Figures: map[string]any{"dead_lettered": 0, "events_per_sec": 497.6, "peak_heap_mb": 28.8, "peak_in_flight": 996,
			"toxics": "latency 25±10 ms, 256 KB/s"}}
	bad := &scenarioResult{ID: "R2", Name: "relay SIGKILLed at random moments", Target: "postgres+kafka", Seconds: 20,
		Report:   checker.Report{Lost: 3, Parking: 1},
		Failures: []string{"checker: " + strings.Repeat("event 0192f3a4-0000-7000-8000-000000000001 lost; ", 6)}}
	skipped := &scenarioResult{ID: "R6", Name: "database stopped hard during writes", Target: "postgres+kafka", Skipped: "no --pg-ctl"}

	var all bytes.Buffer
	printChaos(&all, []*scenarioResult{r2, r7})
	lines := strings.Split(strings.TrimSuffix(all.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != "chaos: 2/2 scenarios ok on sqlite+kfake" {
		t.Errorf("last line %q, want the overall verdict", last)
	}
	if !strings.Contains(all.String(), "\n  ok        R2   relay SIGKILLed at random moments (12.3 s)\n") {
		t.Errorf("no line starting with the verdict for R2:\n%s", all.String())
	}

	var some bytes.Buffer
	printChaos(&some, []*scenarioResult{r2, r7, bad, skipped})
	out := some.String()
	for _, want := range []string{
		"\n  FAILED    R2   relay SIGKILLed at random moments (20.0 s)\n",
		"\n  SKIPPED   R6   database stopped hard during writes (0.0 s)\n",
		"            skipped (counts as a failure): no --pg-ctl\n",
		"            lost 3, phantom 0, order 0, dup 0, parking 1\n",
		"\nchaos: FAILED: R2, R6 (skipped) on postgres+kafka (2/4 scenarios ok)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
	for _, l := range strings.Split(all.String()+out, "\n") {
		if n := utf8.RuneCountInString(l); n > 120 {
			t.Errorf("line of %d columns: %q", n, l)
		}
		// scripts/mutants.sh counts a catch by the progress lines on
		// stderr; the table must not look like one.
		if progressFailed.MatchString(l) {
			t.Errorf("a table line looks like a progress line: %q", l)
		}
	}
}

// The HTTP statuses a scenario saw read "200: 51, 400: 3, 503: 2", in
// order of status, never as a Go map.
func TestCountsByStatusReadsAsAListInOrder(t *testing.T) {
	for _, tc := range []struct {
		in   map[int]int
		want string
	}{
		{nil, "none"},
		{map[int]int{}, "none"},
		{map[int]int{200: 51}, "200: 51"},
		{map[int]int{503: 2, 200: 51, 400: 3, 413: 1}, "200: 51, 400: 3, 413: 1, 503: 2"},
	} {
		if got := countsByStatus(tc.in); got != tc.want || strings.Contains(got, "map[") {
			t.Errorf("countsByStatus(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
