package breaker

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestREADMEStatesTheBreakerDefaults ties README's sentence on the relay's
// knobs to the zero Config's thresholds.
func TestREADMEStatesTheBreakerDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	want := fmt.Sprintf("breaker (%d failures, %d s, %d successes)", c.FailureThreshold, int(c.OpenTimeout/time.Second), c.HalfOpenSuccess)
	if !strings.Contains(text, want) {
		t.Errorf("README does not say %q, the breaker's default", want)
	}
}
