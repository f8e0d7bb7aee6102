package kafka_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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

// Linger is the client's own: a producer linger set among Config.Opts
// counts too, so a relay does not wait on its reader for a producer that
// gathers records itself.
func TestLingerIsTheClientsOwn(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  kafka.Config
		want time.Duration
	}{
		{"none", kafka.Config{}, 0},
		{"Config.Linger", kafka.Config{Linger: 5 * time.Millisecond}, 5 * time.Millisecond},
		{"an option", kafka.Config{Opts: []kgo.Opt{kgo.ProducerLinger(7 * time.Millisecond)}}, 7 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Brokers = []string{"127.0.0.1:1"} // never dialled
			p, err := kafka.NewPublisher(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if got := p.Linger(); got != tc.want {
				t.Fatalf("Linger() = %s, want %s", got, tc.want)
			}
		})
	}
}
