package scylla_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/storetest"
)

// These run against a real ScyllaDB cluster named by
// OUTBOX_TEST_SCYLLA_HOSTS (host,host,...). ScyllaDB cannot be installed
// on the project's CI machines, so they are skipped there.

type recorder struct {
	mu  sync.Mutex
	got []outbox.Message
}

func (r *recorder) Publish(_ context.Context, m outbox.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// cluster opens a fresh keyspace on the cluster, or skips.
func cluster(t *testing.T) *scylla.Store {
	t.Helper()
	hosts := os.Getenv("OUTBOX_TEST_SCYLLA_HOSTS")
	if hosts == "" {
		t.Skip("OUTBOX_TEST_SCYLLA_HOSTS is not set")
	}
	ks := fmt.Sprintf("outbox_it_%d", time.Now().UnixNano()%1e9)
	s, err := scylla.Open(scylla.Config{Hosts: strings.Split(hosts, ","), Keyspace: ks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Session().Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
		s.Close()
	})
	if err := scylla.Migrate(t.Context(), s.Session(), ks, scylla.SchemaOptions{Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// The conformance suite through CDC: per-aggregate order only, rows
// upserted rather than rejected by id, and records that arrive after the
// confidence window.
func TestScyllaConformance(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, PerAggregateOrder: true, ReadIdle: 8 * time.Second},
		func(t *testing.T) storetest.Harness {
			s := cluster(t)
			return storetest.Harness{Store: s, Source: s.CDC(scylla.LowLatency()), Append: func(ctx context.Context, msgs []outbox.Message, fail bool) error {
				return s.AppendBatch(ctx, msgs, fail)
			}}
		})
}

func TestScyllaBatchAndCDCEndToEnd(t *testing.T) {
	s := cluster(t)
	ctx := t.Context()
	src := s.CDC(scylla.LowLatency())
	pub := &recorder{}
	r, err := relay.New(src, pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 3 {
		o := order.Order{ID: "o1", CustomerID: "c", Currency: "EUR", Status: order.StatusPending, Version: int64(i + 1), CreatedAt: now, UpdatedAt: now}
		m, _ := outbox.NewMessage(order.AggregateType, "o1", order.EventUpdated, int64(i+1), map[string]int{"v": i})
		if err := s.AppendWithOrder(ctx, o, m); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, "three events through CDC", func() bool { return pub.count() == 3 })
	for i, m := range pub.got {
		if m.Sequence != int64(i+1) {
			t.Fatalf("event %d has sequence %d: out of order", i, m.Sequence)
		}
	}
}
