package relay_test

import (
	"context"
	"fmt"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
	"github.com/outbox-dev/outbox/store/poll"
)

// printer stands in for a Kafka publisher.
type printer struct{ done chan struct{} }

func (p printer) Publish(_ context.Context, m outbox.Message) error {
	fmt.Println("published", m.Key(), m.Type, m.Sequence)
	if m.Sequence == 2 {
		close(p.done)
	}
	return nil
}

func Example() {
	store := memstore.New()
	src, _ := poll.NewSource(store, poll.Config{Wake: store.Wake()})
	pub := printer{done: make(chan struct{})}
	r, err := relay.New(src, pub, store, relay.Config{})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go r.Serve(ctx)

	// The order row and its event commit together; the relay publishes after.
	created, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]int{"total": 100})
	updated, _ := outbox.NewMessage("order", "o1", "OrderUpdated", 2, map[string]int{"total": 150})
	store.Transact(ctx, func(tx *memstore.Tx) error { return tx.Append(created, updated) })
	<-pub.done
	// Output:
	// published order/o1 OrderCreated 1
	// published order/o1 OrderUpdated 2
}
