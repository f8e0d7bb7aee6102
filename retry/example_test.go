package retry_test

import (
	"fmt"

	"github.com/outbox-dev/outbox/retry"
)

func ExamplePolicy_Delay() {
	p := retry.Default()
	for n := 1; n <= p.MaxAttempts; n++ {
		fmt.Print(p.Delay(n), " ")
	}
	// Output: 0s 100ms 200ms 400ms 500ms
}
