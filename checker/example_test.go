package checker_test

import (
	"fmt"

	"github.com/outbox-dev/outbox/checker"
)

func Example() {
	history := []checker.Event{
		{Op: checker.OpCommit, ID: "e1", Aggregate: "order/1", Sequence: 1},
		{Op: checker.OpCommit, ID: "e2", Aggregate: "order/1", Sequence: 2},
		{Op: checker.OpCommit, ID: "e3", Aggregate: "order/2", Sequence: 1},
	}
	topic := []checker.Observed{ // e2 arrived twice, e3 never
		{Topic: "orders", Offset: 0, ID: "e1", Aggregate: "order/1", Sequence: 1},
		{Topic: "orders", Offset: 1, ID: "e2", Aggregate: "order/1", Sequence: 2},
		{Topic: "orders", Offset: 2, ID: "e2", Aggregate: "order/1", Sequence: 2},
	}
	rep := checker.Check(history, topic, nil)
	fmt.Println(rep.OK(), rep.Lost, rep.Dup, rep.Order)
	// Output: false 1 1 0
}
