package relay_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// drainCounter closes done once n messages were acknowledged.
type drainCounter struct {
	n    int64
	seen atomic.Int64
	done chan struct{}
}

func (d *drainCounter) OnPublish(outbox.Message, int, time.Duration) {
	if d.seen.Add(1) == d.n {
		close(d.done)
	}
}

// BenchmarkDrain empties a backlog of 5,000 events (256-byte payloads, over
// 5,000, 100 and 10 aggregates) from SQLite into the in-process broker,
// beside raw franz-go produce of the same records (same keys, same
// partition count, idempotent, acks=all, linger 0) measured in the same
// run. Run it with:
//
//	go test ./relay -run '^$' -bench Drain -benchtime 5x
func BenchmarkDrain(b *testing.B) {
	for _, aggregates := range []int{5000, 100, 10} {
		b.Run(fmt.Sprintf("aggregates=%d", aggregates), func(b *testing.B) { benchmarkDrain(b, aggregates) })
	}
}

func benchmarkDrain(b *testing.B, aggregates int) {
	const n = 5000
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	raw, err := kgo.NewClient(kgo.SeedBrokers(broker.Addrs()...), kgo.AllowAutoTopicCreation(),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: broker.Addrs(), TopicTemplate: kafka.TopicPerAggregateType})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	payload := strings.Repeat("x", 254)
	var rawTotal, relayTotal time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		store, msgs := backlog(b, n, aggregates, payload)
		records := make([]*kgo.Record, len(msgs))
		for j, m := range msgs {
			records[j] = kafka.Record(m, "bench.raw")
		}
		b.StartTimer()

		start := time.Now()
		for _, r := range records {
			raw.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
				if err != nil {
					b.Error(err)
				}
			})
		}
		if err := raw.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		rawTotal += time.Since(start)

		start = time.Now()
		counter := &drainCounter{n: n, done: make(chan struct{})}
		src, _ := poll.NewSource(store, poll.Config{Name: fmt.Sprint("bench", i)})
		r, err := relay.New(src, pub, store, relay.Config{Hooks: []relay.Hook{counter}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Serve(ctx) }()
		<-counter.done
		relayTotal += time.Since(start)
		cancel()
		<-done
		store.Close()
	}
	rawRate := float64(n*b.N) / rawTotal.Seconds()
	relayRate := float64(n*b.N) / relayTotal.Seconds()
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(relayRate, "relay-events/s")
	b.ReportMetric(relayRate/rawRate, "drain-ratio")
	b.Logf("drain: relay %.0f events/s, raw produce %.0f events/s, ratio %.3f", relayRate, rawRate, relayRate/rawRate)
}

func backlog(b *testing.B, n, aggregates int, payload string) (*sqlite.Store, []outbox.Message) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Config{Synchronous: "NORMAL"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		if msgs[i], err = outbox.NewMessage("order", fmt.Sprintf("o%d", i%aggregates), "Changed", int64(i/aggregates+1), payload); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i += 500 {
		err := s.Transact(ctx, func(tx *sql.Tx) error { return s.Append(ctx, tx, msgs[i:min(i+500, n)]...) })
		if err != nil {
			b.Fatal(err)
		}
	}
	return s, msgs
}
