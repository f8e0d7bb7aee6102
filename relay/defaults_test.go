package relay

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestREADMEStatesTheRelayDefaults ties README's sentence on the relay's
// knobs to the zero Config's defaults: change one and the other must
// follow.
func TestREADMEStatesTheRelayDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	delays := []string{"0"}
	for d, i := c.Retry.InitialDelay, 1; i < c.Retry.MaxAttempts; i++ {
		delays = append(delays, fmt.Sprint(min(d, c.Retry.MaxDelay).Milliseconds()))
		d = time.Duration(float64(d) * c.Retry.Multiplier)
	}
	for _, want := range []string{
		fmt.Sprintf("retry (%d attempts: %s ms", c.Retry.MaxAttempts, strings.Join(delays, ", ")),
		fmt.Sprintf("%d workers", c.Workers),
		fmt.Sprintf("%d,%03d records in flight", c.MaxInFlight/1000, c.MaxInFlight%1000),
		fmt.Sprintf("%d ms checkpoints", c.CommitInterval.Milliseconds()),
		fmt.Sprintf("a %d-minute stuck timeout", int(c.StuckTimeout/time.Minute)),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("README does not say %q, the relay's default", want)
		}
	}
}
