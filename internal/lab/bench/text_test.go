package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestDurabilityReadsAsWordsNotAGoMap(t *testing.T) {
	got := durabilityText(map[string]string{"synchronous": "FULL", "broker": "kfake in memory, no fsync"})
	if want := "broker kfake in memory, no fsync; synchronous FULL"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A CPU figure not measured (SQLite: the relay runs in the writers'
// process) says why, not 0.0 ms and a ratio of 0.
func TestACPUFigureNotMeasuredSaysWhy(t *testing.T) {
	note := "not measured: on SQLite the relay runs in the writers' process"
	var out bytes.Buffer
	printBenchTable(&out, &benchReport{Latency: []rateFigure{
		{OfferedPerSec: 1000, P50Ms: 5, CPUNote: note},
		{OfferedPerSec: 5000, P50Ms: 5, RelayCPUPer1000: 60, RawCPUPer1000: 45, CPURatio: 1.333},
	}})
	text := out.String()
	for _, want := range []string{"cpu at 1000/s  " + note, "60.0 ms per 1,000 events relay", "1.333"} {
		if !strings.Contains(strings.Join(strings.Fields(text), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "cpu at 1000/s") && (strings.Contains(line, "0.0 ms") || strings.Contains(line, "0.000")) {
			t.Errorf("an unmeasured figure printed as zero: %q", line)
		}
	}
}
