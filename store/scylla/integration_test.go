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
	"github.com/outbox-dev/outbox/store/memstore"
	"github.com/outbox-dev/outbox/store/scylla"
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

func TestScyllaBatchAndCDCEndToEnd(t *testing.T) {
	hosts := os.Getenv("OUTBOX_TEST_SCYLLA_HOSTS")
	if hosts == "" {
		t.Skip("OUTBOX_TEST_SCYLLA_HOSTS is not set")
	}
	ctx := t.Context()
	ks := fmt.Sprintf("outbox_it_%d", time.Now().UnixNano()%1e9)
	s, err := scylla.Open(scylla.Config{Hosts: strings.Split(hosts, ","), Keyspace: ks})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := scylla.Migrate(ctx, s.Session(), ks, scylla.SchemaOptions{Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"}); err != nil {
		t.Fatal(err)
	}
	defer s.Session().Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
	src := s.CDC(scylla.LowLatency())
	pub := &recorder{}
	dlq := memstore.New() // the ScyllaDB dead-letter store is not built yet
	r, err := relay.New(src, pub, dlq, relay.Config{})
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
