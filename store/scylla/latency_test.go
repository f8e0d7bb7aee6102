package scylla_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/storetest"
)

// ackTimes wraps the Kafka publisher and notes when the broker first
// acknowledged each event.
type ackTimes struct {
	outbox.Publisher
	mu  sync.Mutex
	at  map[uuid.UUID]time.Time
	all int
}

func (a *ackTimes) Publish(ctx context.Context, m outbox.Message) error {
	err := a.Publisher.Publish(ctx, m)
	if err == nil {
		a.mu.Lock()
		if _, ok := a.at[m.ID]; !ok {
			a.at[m.ID] = time.Now()
		}
		a.all++
		a.mu.Unlock()
	}
	return err
}

func (a *ackTimes) acked(id uuid.UUID) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[id]
	return t, ok
}

// TestScyllaCDCLatency measures commit → Kafka acknowledgement through
// the whole path (LOGGED BATCH, CDC log, scylla-cdc-go, relay, Apache
// Kafka) with the reader's default windows and with the low-latency
// profile. It takes about a minute and reports figures, so it runs only
// when asked:
//
//	OUTBOX_SCYLLA_LATENCY=1 go test -run TestScyllaCDCLatency -v ./store/scylla
func TestScyllaCDCLatency(t *testing.T) {
	if os.Getenv("OUTBOX_SCYLLA_LATENCY") == "" {
		t.Skip("set OUTBOX_SCYLLA_LATENCY=1 to measure")
	}
	events := 300
	if n, err := strconv.Atoi(os.Getenv("OUTBOX_SCYLLA_LATENCY")); err == nil && n > 1 {
		events = n
	}
	for _, profile := range []struct {
		name string
		cfg  scylla.CDCConfig
	}{{"default", scylla.CDCConfig{}}, {"low-latency", scylla.LowLatency()}} {
		t.Run(profile.name, func(t *testing.T) {
			s := cluster(t)
			brokers := testenv.KafkaBrokers(t)
			ctx := t.Context()
			kp, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: "scyllalat-" + s.Keyspace() + ".{aggregatetype}"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { kp.Close() })
			pub := &ackTimes{Publisher: kp, at: map[uuid.UUID]time.Time{}}
			r, err := relay.New(s.CDC(profile.cfg), pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Serve(t, r)
			// Warm up: the reader has started and the topic exists.
			warm := storetest.Msg(t, "warm", 1)
			if err := s.AppendEvents(ctx, warm); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 2*time.Minute, "the first event", func() bool { _, ok := pub.acked(warm.ID); return ok })

			// One LOGGED BATCH every 50 ms, over 20 aggregates.
			committed := map[uuid.UUID]time.Time{}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := range events {
				<-tick.C
				m := storetest.Msg(t, fmt.Sprintf("agg%d", i%20), int64(i/20+1))
				if err := s.AppendEvents(ctx, m); err != nil {
					t.Fatal(err)
				}
				committed[m.ID] = time.Now()
			}
			testenv.Eventually(t, 2*time.Minute, "every event acknowledged", func() bool {
				for id := range committed {
					if _, ok := pub.acked(id); !ok {
						return false
					}
				}
				return true
			})
			var lat []time.Duration
			for id, at := range committed {
				acked, _ := pub.acked(id)
				lat = append(lat, acked.Sub(at))
			}
			slices.Sort(lat)
			q := func(p float64) time.Duration {
				return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
			}
			t.Logf("%s profile: %d events at 20/s, commit → Kafka ack p50 %s, p99 %s, max %s (min %s)",
				profile.name, len(lat), q(0.50), q(0.99), lat[len(lat)-1].Round(time.Millisecond), lat[0].Round(time.Millisecond))
		})
	}
}
