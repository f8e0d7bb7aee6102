package relay_test

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/memstore"
)

// startLog records the hooks around each message, in call order.
type startLog struct {
	mu     sync.Mutex
	events []string
}

func (l *startLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *startLog) OnPublishStart(msgs []outbox.Message) {
	for _, m := range msgs {
		l.add("start " + m.ID.String())
	}
}

func (l *startLog) OnPublish(m outbox.Message, _ int, _ time.Duration) { l.add("ack " + m.ID.String()) }
func (l *startLog) OnDeadLetter(dl outbox.DeadLetter)                  { l.add("dead " + dl.Message.ID.String()) }

// TestPublishStartHookHearsEachMessageBeforeItSettles: every acknowledged
// or dead-lettered message was started first and never after, and a
// message that fails and is retried is not started again.
func TestPublishStartHookHearsEachMessageBeforeItSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		failures := 2
		var mu sync.Mutex
		pub := &fakePublisher{fail: func(m outbox.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if m.AggregateID == "poison" {
				return outbox.Permanent(errors.New("refused"))
			}
			if m.AggregateID == "flaky" && failures > 0 {
				failures--
				return errors.New("transient")
			}
			return nil
		}}
		log := &startLog{}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{Hooks: []relay.Hook{log}})
		stop := serve(t, r)
		var ms []outbox.Message
		for _, agg := range []string{"a", "flaky", "poison", "a"} {
			ms = append(ms, w.write("order", agg, map[string]string{"agg": agg}))
		}
		settle(t, time.Minute, func() bool { return len(pub.published()) >= 3 && r.Stats().DeadLettered >= 1 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		for _, m := range ms {
			id := m.ID.String()
			starts, settled := 0, -1
			for i, e := range log.events {
				switch e {
				case "start " + id:
					starts++
					if settled >= 0 {
						t.Fatalf("%s/%s started after it settled: %v", m.AggregateID, id, log.events)
					}
				case "ack " + id, "dead " + id:
					settled = i
				}
			}
			// A run's unacknowledged tail is started again in the next
			// run; a failing message is retried within one start.
			if starts == 0 || settled < 0 || (m.AggregateID == "flaky" && starts != 1) {
				t.Fatalf("%s/%s: started %d times, settled %v; want started, then settled: %v", m.AggregateID, id, starts, settled >= 0, log.events)
			}
		}
	})
}
