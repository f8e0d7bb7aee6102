package sqlite_test

import (
	"testing"
	"time"

	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/storetest"
)

func TestOrderRepositoryConformance(t *testing.T) {
	storetest.RunOrders(t, func(t *testing.T) storetest.Harness {
		s := open(t)
		src, err := poll.NewSource(s, poll.Config{Interval: time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{Source: src, Orders: s.Orders()}
	})
}
