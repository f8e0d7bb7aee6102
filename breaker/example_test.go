package breaker_test

import (
	"errors"
	"fmt"

	"github.com/outbox-dev/outbox/breaker"
)

func Example() {
	b, _ := breaker.New(breaker.Config{}) // the design's 5 failures, 30 s, 3 successes
	for range 5 {
		b.Do(func() error { return errors.New("broker unavailable") })
	}
	err := b.Do(func() error { return nil })
	fmt.Println(b.State(), errors.Is(err, breaker.ErrOpen))
	// Output: open true
}
