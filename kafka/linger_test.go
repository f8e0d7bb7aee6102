package kafka_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// With a linger, events published within it go to the broker in one
// produce request, sent when the linger ends (--kafka-linger).
func TestALingerSendsEventsPublishedWithinItInOneRequest(t *testing.T) {
	const linger = 500 * time.Millisecond
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{Linger: linger})
	if got := p.Linger(); got != linger { // the relay's reader does not wait for it (relay.lingerer)
		t.Fatalf("Linger() = %s, want %s", got, linger)
	}
	aggType := fmt.Sprintf("linger%d", time.Now().UnixNano())
	if err := p.Publish(ctx(t), msg(t, aggType, "warm", "Changed", 1, "w")); err != nil { // the topic exists
		t.Fatal(err)
	}
	var produces atomic.Int32
	e.Cluster().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster().KeepControl()
		produces.Add(1)
		return nil, nil, false
	})
	msgs := make([]outbox.Message, 8)
	for i := range msgs {
		msgs[i] = msg(t, aggType, fmt.Sprint("agg-", i), "Changed", 1, i)
	}
	errs := make([]error, len(msgs))
	c := ctx(t)
	began := time.Now()
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Go(func() { errs[i] = p.Publish(c, m) })
	}
	wg.Wait()
	took := time.Since(began)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if took < linger {
		t.Fatalf("the events were acknowledged after %s, before the %s linger ended", took, linger)
	}
	if n := produces.Load(); n != 1 {
		t.Fatalf("%d produce requests for 8 events published within the linger, want 1", n)
	}
}
