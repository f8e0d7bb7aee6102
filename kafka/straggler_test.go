package kafka

import (
	"testing"
	"time"
)

// DESIGN.md: once one record of a round is answered, the others have as
// long again as that answer took, and at least 50 ms.
func TestAStragglerHasAsLongAgainAndAtLeast50ms(t *testing.T) {
	for _, tc := range []struct{ elapsed, want time.Duration }{
		{0, 50 * time.Millisecond},
		{time.Millisecond, 50 * time.Millisecond},
		{50 * time.Millisecond, 50 * time.Millisecond},
		{80 * time.Millisecond, 80 * time.Millisecond},
		{3 * time.Second, 3 * time.Second},
	} {
		if got := stragglerCutoff(tc.elapsed); got != tc.want {
			t.Errorf("first answer after %s: the others wait %s, want %s", tc.elapsed, got, tc.want)
		}
	}
}
