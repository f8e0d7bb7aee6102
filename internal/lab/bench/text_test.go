package bench

import "testing"

func TestDurabilityReadsAsWordsNotAGoMap(t *testing.T) {
	got := durabilityText(map[string]string{"synchronous": "FULL", "broker": "kfake in memory, no fsync"})
	if want := "broker kfake in memory, no fsync; synchronous FULL"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
