package scylla

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Apache Cassandra speaks CQL but has no Scylla CDC: the parts that need
// no CDC (schema, LOGGED BATCH, lease, fenced progress) run against it
// here. The test script starts one from Maven Central jars and sets
// OUTBOX_TEST_CASSANDRA_HOSTS; required in CI.
func cassandra(t *testing.T) (*Store, string) {
	t.Helper()
	hosts := os.Getenv("OUTBOX_TEST_CASSANDRA_HOSTS")
	if hosts == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatal("OUTBOX_TEST_CASSANDRA_HOSTS is required (OUTBOX_REQUIRE_SERVICES=1); run ./scripts/test.sh")
		}
		t.Skip("OUTBOX_TEST_CASSANDRA_HOSTS is not set")
	}
	ks := fmt.Sprintf("outbox_t%d", time.Now().UnixNano()%1e9)
	s, err := Open(Config{Hosts: strings.Split(hosts, ","), Keyspace: ks, Consistency: gocql.One, Timeout: 10 * time.Second, ProtoVersion: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.session.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
		s.Close()
	})
	err = Migrate(t.Context(), s.session, ks, SchemaOptions{WithoutCDC: true, Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"})
	if err != nil {
		t.Fatal(err)
	}
	return s, ks
}

func TestCassandraBatchAppendIsAtomicAndRetrySafe(t *testing.T) {
	s, ks := cassandra(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	o := order.Order{ID: "o1", CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 2, UnitPrice: 5}},
		Status: order.StatusPending, Total: 10, Version: 1, CreatedAt: now, UpdatedAt: now}
	m, _ := outbox.NewMessage(order.AggregateType, "o1", order.EventCreated, 1, map[string]int{"total": 10})
	m.Headers = map[string]string{outbox.HeaderTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for range 2 { // the second is a retry after a timeout
		if err := s.AppendWithOrder(ctx, o, m); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	if err := s.session.Query(`SELECT total FROM `+ks+`.orders WHERE id = ?`, "o1").Scan(&total); err != nil || total != 10 {
		t.Fatalf("order row: total %d, %v", total, err)
	}
	var n int
	var id gocql.UUID
	var headers map[string]string
	iter := s.session.Query(`SELECT id, headers FROM `+ks+`.outbox_messages WHERE aggregatetype = ? AND aggregateid = ?`, "order", "o1").Iter()
	for iter.Scan(&id, &headers) {
		n++
	}
	if err := iter.Close(); err != nil || n != 1 || id != gocql.UUID(m.ID) || headers[outbox.HeaderTraceParent] == "" {
		t.Fatalf("outbox rows after a retried batch: %d (id %v, headers %v, err %v); want exactly one", n, id, headers, err)
	}
	bad := m
	bad.Payload = []byte("{")
	if err := s.AppendWithOrder(ctx, o, bad); err == nil {
		t.Fatal("an invalid event was written")
	}
}

func TestCassandraLeaseAndFencedProgress(t *testing.T) {
	s, ks := cassandra(t)
	ctx := t.Context()
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Millisecond)}
	store := cqlLease{s.session, ks}
	a := newLease(store, "outbox_messages", "relay-a", 10*time.Second, clock.now)
	b := newLease(store, "outbox_messages", "relay-b", 10*time.Second, clock.now)
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(ctx); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a held lease was acquired: %v", err)
	}
	clock.advance(11 * time.Second)
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("takeover of an expired lease: %v", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the old holder renewed: %v", err)
	}
	progress := cqlProgress{s.session, ks, "outbox_messages"}
	pb := &fencedProgress{store: progress, lease: b}
	gen := time.Unix(1700000000, 0).UTC()
	if err := pb.StartGeneration(ctx, gen); err != nil {
		t.Fatal(err)
	}
	if got, err := pb.GetCurrentGeneration(ctx); err != nil || !got.Equal(gen) {
		t.Fatalf("generation %v %v", got, err)
	}
	newer := gocql.TimeUUID()
	if err := pb.SaveProgress(ctx, gen, "outbox_messages", scyllacdc.StreamID("s1"), scyllacdc.Progress{LastProcessedRecordTime: newer}); err != nil {
		t.Fatal(err)
	}
	stale := &fencedProgress{store: progress, lease: &Lease{name: "x", now: clock.now, ok: true, held: leaseRecord{Epoch: 1, Expires: clock.t.Add(time.Hour)}}}
	if err := stale.SaveProgress(ctx, gen, "outbox_messages", scyllacdc.StreamID("s1"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("an epoch-1 write over epoch-2 progress: %v", err)
	}
	if p, _ := pb.GetProgress(ctx, gen, "outbox_messages", scyllacdc.StreamID("s1")); p.LastProcessedRecordTime != newer {
		t.Fatal("the fenced write moved progress")
	}
}
