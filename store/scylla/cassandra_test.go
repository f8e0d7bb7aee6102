package scylla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/internal/testcert"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/storetest"
)

// Apache Cassandra speaks CQL but has no Scylla CDC: the parts that need
// no CDC (schema, LOGGED BATCH, lease, fenced progress) run against it
// here. The test script starts one from Maven Central jars and sets
// OUTBOX_TEST_CASSANDRA_HOSTS; required in CI.
func cassandra(t *testing.T) (*Store, string) {
	t.Helper()
	return cassandraWith(t, Config{})
}

// cassandraHosts is OUTBOX_TEST_CASSANDRA_HOSTS, or a skip.
func cassandraHosts(t *testing.T) []string {
	t.Helper()
	hosts := os.Getenv("OUTBOX_TEST_CASSANDRA_HOSTS")
	if hosts == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatal("OUTBOX_TEST_CASSANDRA_HOSTS is required (OUTBOX_REQUIRE_SERVICES=1); run ./scripts/test.sh")
		}
		t.Skip("OUTBOX_TEST_CASSANDRA_HOSTS is not set")
	}
	return strings.Split(hosts, ",")
}

// cassandraWith opens a fresh keyspace with cfg's knobs.
func cassandraWith(t *testing.T, cfg Config) (*Store, string) {
	t.Helper()
	hosts := cassandraHosts(t)
	ks := fmt.Sprintf("outbox_t%d", time.Now().UnixNano()%1e9)
	cfg.Hosts, cfg.Keyspace, cfg.Timeout, cfg.ProtoVersion = hosts, ks, 10*time.Second, 4
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.session.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
		s.Close()
	})
	err = Migrate(t.Context(), s.session, ks, SchemaConfig{WithoutCDC: true, Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"})
	if err != nil {
		t.Fatal(err)
	}
	return s, ks
}

func TestCassandraBatchAppendIsAtomicAndRetrySafe(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Millisecond)}
	leases := cqlLease{s.session, ks}
	a := newLease(leases, "outbox_messages", "relay-a", 10*time.Second, clock.now)
	b := newLease(leases, "outbox_messages", "relay-b", 10*time.Second, clock.now)
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
	stale := &fencedProgress{store: progress, lease: staleLease(leases, clock, 1)}
	if err := stale.SaveProgress(ctx, gen, "outbox_messages", scyllacdc.StreamID("s1"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("an epoch-1 write over epoch-2 progress: %v", err)
	}
	if p, _ := pb.GetProgress(ctx, gen, "outbox_messages", scyllacdc.StreamID("s1")); p.LastProcessedRecordTime != newer {
		t.Fatal("the fenced write moved progress")
	}
}

// A lease table reset (deleted rows, a restored backup) hands out epoch 1
// again while the progress rows carry a newer one: every progress write
// would be refused after every restart, so the refusal is fatal.
func TestCassandraLeaseTableResetIsFatal(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Millisecond)}
	leases := cqlLease{s.session, ks}
	progress := cqlProgress{s.session, ks, "outbox_messages"}
	save := func(l *Lease) error {
		p := &fencedProgress{store: progress, lease: l}
		return p.SaveProgress(ctx, time.Unix(1700000000, 0), "outbox_messages", scyllacdc.StreamID("s1"), scyllacdc.Progress{LastProcessedRecordTime: gocql.TimeUUID()})
	}
	a := newLease(leases, "outbox_messages", "relay-a", 10*time.Second, clock.now)
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	clock.advance(11 * time.Second)
	b := newLease(leases, "outbox_messages", "relay-b", 10*time.Second, clock.now)
	if err := b.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := save(b); err != nil {
		t.Fatal(err)
	}
	if err := save(staleLease(leases, clock, 1)); !errors.Is(err, ErrLeaseLost) || outbox.IsFatal(err) {
		t.Fatalf("an older holder's write: %v, want an ordinary ErrLeaseLost", err)
	}
	if err := s.session.Query(`DELETE FROM `+ks+`.outbox_relay_lease WHERE name = ?`, "outbox_messages").Exec(); err != nil {
		t.Fatal(err)
	}
	c := newLease(leases, "outbox_messages", "relay-c", 10*time.Second, clock.now)
	if err := c.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	err := save(c)
	if !outbox.IsFatal(err) || !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a write under a reset lease table: %v, want a fatal ErrLeaseLost", err)
	}
	t.Logf("the operator reads: %v", err)
}

// countingObserver counts the statements a session runs.
type countingObserver struct{ n atomic.Int64 }

func (c *countingObserver) ObserveQuery(context.Context, gocql.ObservedQuery) { c.n.Add(1) }

// A stream's progress write is one lightweight transaction once its row
// exists (two the first time), and still refused for an older epoch.
func TestCassandraProgressWriteIsOneLightweightTransaction(t *testing.T) {
	t.Parallel()
	_, ks := cassandra(t)
	obs := &countingObserver{}
	c := gocql.NewCluster(cassandraHosts(t)...)
	c.ProtoVersion, c.Consistency, c.Timeout, c.QueryObserver = 4, gocql.LocalQuorum, 10*time.Second, obs
	if _, port, err := net.SplitHostPort(cassandraHosts(t)[0]); err == nil {
		c.Port, _ = strconv.Atoi(port)
	}
	session, err := c.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	ctx := t.Context()
	progress := cqlProgress{session, ks, "outbox_messages"}
	gen := time.Unix(1700000000, 0)
	write := func(epoch int64) (bool, int64) {
		t.Helper()
		before := obs.n.Load()
		ok, err := progress.save(ctx, gen, "outbox_messages", "s1", gocql.TimeUUID(), epoch)
		if err != nil {
			t.Fatal(err)
		}
		return ok, obs.n.Load() - before
	}
	if ok, n := write(2); !ok || n != 2 {
		t.Fatalf("the first write: applied %v in %d statements, want 2 (the row is created)", ok, n)
	}
	for range 3 {
		if ok, n := write(2); !ok || n != 1 {
			t.Fatalf("a later write: applied %v in %d statements, want one lightweight transaction", ok, n)
		}
	}
	if ok, _ := write(1); ok {
		t.Fatal("an older epoch's write was applied")
	}
	if ok, n := write(3); !ok || n != 1 {
		t.Fatalf("a newer epoch's write: applied %v in %d statements", ok, n)
	}
}

func TestCassandraDeadLetterConformance(t *testing.T) {
	t.Parallel()
	storetest.RunDeadLetters(t, func(t *testing.T) storetest.Store {
		s, _ := cassandra(t)
		return s
	})
}

func outboxSequences(t *testing.T, s *Store, id string) []int64 {
	t.Helper()
	var seqs []int64
	var seq int64
	iter := s.session.Query(`SELECT sequence FROM `+s.keyspace+`.outbox_messages WHERE aggregatetype = 'order' AND aggregateid = ?`, id).Iter()
	for iter.Scan(&seq) {
		seqs = append(seqs, seq)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	return seqs
}

func TestCassandraOrdersWriteAheadIntent(t *testing.T) {
	t.Parallel()
	s, _ := cassandra(t)
	ctx := t.Context()
	repo := s.Orders()
	now := time.Now().UTC().Truncate(time.Microsecond)
	o := order.Order{ID: "o1", CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 2, UnitPrice: 5}},
		Status: order.StatusPending, Total: 10, Version: 1, CreatedAt: now, UpdatedAt: now}
	event := func(o order.Order) outbox.Message {
		m, err := outbox.NewMessage(order.AggregateType, o.ID, order.EventUpdated, o.Version, map[string]int64{"version": o.Version})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if _, replayed, err := repo.Create(ctx, o, event(o), "key-1", "hash-1"); err != nil || replayed {
		t.Fatalf("create: replayed=%v err=%v", replayed, err)
	}
	got, err := repo.Get(ctx, "o1")
	if err != nil || got.Total != 10 || !got.CreatedAt.Equal(now) || len(got.Items) != 1 || got.Version != 1 {
		t.Fatalf("get after create: %+v %v", got, err)
	}
	if _, replayed, err := repo.Create(ctx, o, event(o), "key-1", "hash-1"); err != nil || !replayed {
		t.Fatalf("same key and request: replayed=%v err=%v, want a replay", replayed, err)
	}
	if _, _, err := repo.Create(ctx, o, event(o), "key-1", "hash-2"); !errors.Is(err, order.ErrIdempotencyKey) {
		t.Fatalf("same key, other request: %v", err)
	}
	if got := outboxSequences(t, s, "o1"); len(got) != 1 {
		t.Fatalf("replays wrote events: %v", got)
	}
	if _, err := repo.Get(ctx, "nope"); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("unknown order: %v", err)
	}

	next := func(o order.Order) order.Order {
		o.Version++
		o.Total += 1
		o.UpdatedAt = o.UpdatedAt.Add(time.Second)
		return o
	}
	v2 := next(o)
	if err := repo.Update(ctx, v2, event(v2)); err != nil {
		t.Fatal(err)
	}
	if err := repo.Update(ctx, v2, event(v2)); !errors.Is(err, order.ErrConflict) {
		t.Fatalf("a stale update: %v, want ErrConflict", err)
	}

	// The writer dies after its LWT: the order is at version 3, its event
	// is only an intent.
	v3 := next(v2)
	crashing := s.Orders()
	crashing.crashAfterClaim = true
	if err := crashing.Update(ctx, v3, event(v3)); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	if got, _ := repo.Get(ctx, "o1"); got.Version != 3 {
		t.Fatalf("version after the LWT: %d", got.Version)
	}
	if got := outboxSequences(t, s, "o1"); len(got) != 2 {
		t.Fatalf("events before roll-forward: %v", got)
	}
	// The next update publishes version 3's event before its own.
	v4 := next(v3)
	if err := repo.Update(ctx, v4, event(v4)); err != nil {
		t.Fatal(err)
	}
	if got := outboxSequences(t, s, "o1"); !slices.Equal(got, []int64{1, 2, 3, 4}) {
		t.Fatalf("events after an update over a pending one: %v, want 1..4 in order", got)
	}

	// Or, when nobody touches the order again, the sweeper does.
	v5 := next(v4)
	if err := crashing.Update(ctx, v5, event(v5)); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	if n, err := repo.RollForward(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("the sweeper touched a young intent: %d %v", n, err)
	}
	// Two notes: version 5's, and version 3's, whose event version 4's
	// update wrote (a writer drops only its own note).
	if n, err := repo.RollForward(ctx, 0); err != nil || n != 2 {
		t.Fatalf("sweeper: %d %v, want 2", n, err)
	}
	if got := outboxSequences(t, s, "o1"); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("events after the sweeper: %v", got)
	}
	if _, pending, _ := repo.get(ctx, "o1"); pending != nil {
		t.Fatalf("pending event left after roll-forward: %+v", pending)
	}

	// A create whose batch never ran after its key was claimed is
	// finished by its retry.
	o2 := o
	o2.ID = "o2"
	intent, _ := json.Marshal(createIntent{o2, event(o2)})
	if err := s.session.Query(`INSERT INTO `+s.keyspace+`.order_idempotency_keys (key, request_hash, order_id, intent, done) VALUES (?, ?, ?, ?, false)`,
		"key-2", "h", "o2", string(intent)).Exec(); err != nil {
		t.Fatal(err)
	}
	if got, replayed, err := repo.Create(ctx, o2, event(o2), "key-2", "h"); err != nil || !replayed || got.ID != "o2" {
		t.Fatalf("retry of a half-done create: %+v replayed=%v err=%v", got, replayed, err)
	}
	if got := outboxSequences(t, s, "o2"); len(got) != 1 {
		t.Fatalf("rolled-forward create wrote %d events, want 1", len(got))
	}
}

// One LOGGED BATCH of one aggregate whose events' times are equal or go
// backwards (clocks of several instances) is read back in sequence order,
// and retried, still leaves one row per event.
func TestCassandraAnAggregatesEventsClusterInSequenceOrder(t *testing.T) {
	t.Parallel()
	s, _ := cassandra(t)
	ctx := t.Context()
	base := time.Now().UTC().Truncate(time.Microsecond)
	var msgs []outbox.Message
	for i, off := range []time.Duration{0, 0, -time.Microsecond, -2 * time.Second, 0, time.Microsecond, -time.Hour} {
		m, err := outbox.NewMessage(order.AggregateType, "o1", order.EventUpdated, int64(i+1), map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		m.Timestamp = base.Add(off)
		msgs = append(msgs, m)
	}
	for range 2 { // the second is a retry after a timeout
		if err := s.AppendEvents(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if got := outboxSequences(t, s, "o1"); !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("the aggregate's rows read back as sequences %v, want 1..7 in order", got)
	}
}

// CQL cannot change a primary key, so Migrate refuses an outbox table
// clustered the old way (by event_time alone) rather than keep it.
func TestCassandraMigrateRefusesTheOldOutboxKey(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	old := ks + "_old"
	t.Cleanup(func() { s.session.Query("DROP KEYSPACE IF EXISTS " + old).Exec() })
	opts := SchemaConfig{WithoutCDC: true, Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"}
	for _, st := range []string{
		`CREATE KEYSPACE ` + old + ` WITH replication = ` + opts.Replication,
		`CREATE TABLE ` + old + `.outbox_messages (
			aggregatetype text, aggregateid text, event_time timeuuid,
			id uuid, type text, sequence bigint, payload text, headers map<text, text>, timestamp bigint,
			PRIMARY KEY ((aggregatetype, aggregateid), event_time))`,
	} {
		if err := s.session.Query(st).WithContext(ctx).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	err := Migrate(ctx, s.session, old, opts)
	if !errors.Is(err, ErrOutboxLayout) {
		t.Fatalf("migrate over the old outbox key: %v, want ErrOutboxLayout", err)
	}
	t.Logf("the operator reads: %v", err)
	if err := Migrate(ctx, s.session, ks, opts); err != nil {
		t.Fatalf("migrate over the current layout: %v", err)
	}
}

// Idempotency keys expire: the claim (a lightweight transaction) and the
// later done flag carry the retention as their TTL, the flag no longer
// than the claim, so the whole row goes at once and a retry after the
// window finds no key.
func TestCassandraIdempotencyKeysExpire(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ttl  time.Duration // configured; 0 takes the default
		want time.Duration
	}{
		{"default", 0, 24 * time.Hour},
		{"configured", time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ks := cassandraWith(t, Config{IdempotencyTTL: tc.ttl})
			ctx := t.Context()
			repo := s.Orders()
			now := time.Now().UTC().Truncate(time.Microsecond)
			o := order.Order{ID: "o1", CustomerID: "c1", Currency: "EUR", Status: order.StatusPending, Version: 1, CreatedAt: now, UpdatedAt: now}
			ev, _ := outbox.NewMessage(order.AggregateType, "o1", order.EventCreated, 1, map[string]int{"v": 1})
			if _, _, err := repo.Create(ctx, o, ev, "key-1", "hash-1"); err != nil {
				t.Fatal(err)
			}
			keyTTLs(t, s, ks, "key-1", tc.want)
			// Once the key is gone (as after its TTL), the same request
			// is a new one: the order service gives it a new order id.
			if err := s.session.Query(`DELETE FROM `+ks+`.order_idempotency_keys WHERE key = ?`, "key-1").Exec(); err != nil {
				t.Fatal(err)
			}
			later := o
			later.ID = "o1-again"
			laterEv, _ := outbox.NewMessage(order.AggregateType, later.ID, order.EventCreated, 1, map[string]int{"v": 1})
			if got, replayed, err := repo.Create(ctx, later, laterEv, "key-1", "hash-1"); err != nil || replayed || got.ID != "o1-again" {
				t.Fatalf("retry after the window: %+v replayed=%v err=%v, want a new order", got, replayed, err)
			}

			// A claim whose batch never ran, finished by its retry: the
			// done flag must not outlive the claim either.
			o2 := o
			o2.ID = "o2"
			ev2, _ := outbox.NewMessage(order.AggregateType, "o2", order.EventCreated, 1, map[string]int{"v": 1})
			intent, _ := json.Marshal(createIntent{o2, ev2})
			if err := s.session.Query(`INSERT INTO `+ks+`.order_idempotency_keys (key, request_hash, order_id, intent, done) VALUES (?, ?, ?, ?, false) USING TTL 600`,
				"key-2", "h", "o2", string(intent)).Exec(); err != nil {
				t.Fatal(err)
			}
			if _, replayed, err := repo.Create(ctx, o2, ev2, "key-2", "h"); err != nil || !replayed {
				t.Fatalf("retry of a half-done create: replayed=%v err=%v", replayed, err)
			}
			keyTTLs(t, s, ks, "key-2", 10*time.Minute)
		})
	}
}

// keyTTLs checks every cell of an idempotency key expires within max, the
// done flag no later than the claim.
func keyTTLs(t *testing.T, s *Store, ks, key string, max time.Duration) {
	t.Helper()
	var claim, orderID, intent, done int
	if err := s.session.Query(`SELECT TTL(request_hash), TTL(order_id), TTL(intent), TTL(done) FROM `+ks+`.order_idempotency_keys WHERE key = ?`, key).
		Scan(&claim, &orderID, &intent, &done); err != nil {
		t.Fatal(err)
	}
	limit := int(max / time.Second)
	for name, ttl := range map[string]int{"request_hash": claim, "order_id": orderID, "intent": intent, "done": done} {
		if ttl <= 0 || ttl > limit {
			t.Errorf("key %s: TTL(%s) = %d s, want 1..%d", key, name, ttl, limit)
		}
	}
	t.Logf("key %s: TTL(request_hash) %d s, TTL(done) %d s", key, claim, done)
	if done > claim {
		t.Errorf("key %s: the done flag (%d s) outlives the claim (%d s): the row would outlive the window", key, done, claim)
	}
}

// The test Cassandra accepts TLS and plaintext on one port; its
// certificate names localhost only, and nodes are dialled by IP, so the
// name to verify is given with server_name.
func TestCassandraTLSVerifiesTheNode(t *testing.T) {
	t.Parallel()
	hosts := os.Getenv("OUTBOX_TEST_CASSANDRA_HOSTS")
	ca := os.Getenv("OUTBOX_TEST_CASSANDRA_TLS_CA")
	if hosts == "" || ca == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatal("OUTBOX_TEST_CASSANDRA_HOSTS and OUTBOX_TEST_CASSANDRA_TLS_CA are required (OUTBOX_REQUIRE_SERVICES=1)")
		}
		t.Skip("Cassandra with TLS is not available")
	}
	open := func(query string) error {
		st, err := ParseURL("scylla://" + hosts + "/system?" + query)
		if err != nil {
			return err
		}
		st.Config.ProtoVersion, st.Config.Timeout = 4, 10*time.Second
		s, err := Open(st.Config)
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Ping(t.Context())
	}
	if err := open("ca_file=" + ca + "&server_name=localhost"); err != nil {
		t.Fatalf("TLS with the node's CA: %v", err)
	}
	for name, query := range map[string]string{
		"the dialled IP is not in the certificate": "ca_file=" + ca,
		"another CA":   "ca_file=" + testcertCA(t) + "&server_name=localhost",
		"system roots": "tls=true&server_name=localhost",
	} {
		if err := open(query); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a certificate verification failure", name, err)
		}
	}
}

func testcertCA(t *testing.T) string { return testcert.New(t).CAFile }

// Open refuses a write consistency whose replicas need not overlap the
// CDC reader's LOCAL_QUORUM, and a data centre the cluster does not have.
func TestCassandraOpenRefusesUnsafeConsistency(t *testing.T) {
	t.Parallel()
	hosts := cassandraHosts(t)
	open := func(cfg Config) error {
		cfg.Hosts, cfg.Keyspace, cfg.Timeout, cfg.ProtoVersion = hosts, "system", 10*time.Second, 4
		s, err := Open(cfg)
		if err == nil {
			s.Close()
		}
		return err
	}
	for _, c := range []gocql.Consistency{gocql.One, gocql.LocalOne, gocql.Two} {
		if err := open(Config{Consistency: c}); !errors.Is(err, ErrUnsafeConsistency) {
			t.Errorf("%s: %v, want ErrUnsafeConsistency", c, err)
		}
	}
	if err := open(Config{LocalDC: "nowhere"}); err == nil {
		t.Error("an unknown local_dc was accepted")
	}
	if err := open(Config{LocalDC: "datacenter1", Consistency: gocql.Quorum}); err != nil {
		t.Errorf("the node's own data centre at QUORUM (one data centre): %v", err)
	}
}

// Two instances whose clocks are an hour ahead and an hour behind write
// one order in turns. Every write to the order row is a lightweight
// transaction, whose timestamp is its Paxos ballot (increasing per
// partition, whatever the clients' clocks), and each outbox row is
// written at the timestamp of the order row's latest transaction. So no
// applied update is overwritten by an earlier write, and the aggregate's
// outbox rows carry increasing timestamps in sequence order, the order in
// which CDC delivers them.
func TestCassandraSkewedClocksNeitherLoseUpdatesNorReorderEvents(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	ahead, behind := s.Orders(), s.Orders()
	ahead.now = func() time.Time { return time.Now().Add(time.Hour) }
	behind.now = func() time.Time { return time.Now().Add(-time.Hour) }
	now := time.Now().UTC().Truncate(time.Microsecond)
	o := order.Order{ID: "o1", CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}},
		Status: order.StatusPending, Total: 5, Version: 1, CreatedAt: now, UpdatedAt: now}
	event := func(o order.Order, typ string) outbox.Message {
		m, err := outbox.NewMessage(order.AggregateType, o.ID, typ, o.Version, map[string]int64{"version": o.Version})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if _, _, err := ahead.Create(ctx, o, event(o, order.EventCreated), "", ""); err != nil {
		t.Fatal(err)
	}
	for v := int64(2); v <= 6; v++ {
		repo, name := behind, "an hour behind"
		if v%2 == 1 {
			repo, name = ahead, "an hour ahead"
		}
		o.Version, o.Address = v, fmt.Sprintf("address %d", v)
		if err := repo.Update(ctx, o, event(o, order.EventUpdated)); err != nil {
			got, _ := s.Orders().Get(ctx, o.ID)
			t.Fatalf("update to version %d from the instance %s: %v; the order reads version %d, %q: an applied update was overwritten",
				v, name, err, got.Version, got.Address)
		}
	}
	got, err := s.Orders().Get(ctx, o.ID)
	if err != nil || got.Version != 6 || got.Address != "address 6" {
		t.Fatalf("the order reads version %d, %q (%v); want the last update, version 6", got.Version, got.Address, err)
	}
	iter := s.session.Query(`SELECT sequence, WRITETIME(payload) FROM `+ks+`.outbox_messages WHERE aggregatetype = ? AND aggregateid = ?`,
		order.AggregateType, o.ID).Iter()
	var seq, wt, prev int64
	n := 0
	for iter.Scan(&seq, &wt) {
		n++
		if wt <= prev {
			t.Errorf("event %d written at %s, not after event %d's %s: CDC would deliver it first",
				seq, time.UnixMicro(wt).UTC(), seq-1, time.UnixMicro(prev).UTC())
		}
		if d := time.Since(time.UnixMicro(wt)); d < -time.Minute || d > time.Minute {
			t.Errorf("event %d written at %s, %s from the cluster's time: it follows a client's clock", seq, time.UnixMicro(wt).UTC(), d.Round(time.Second))
		}
		prev = wt
	}
	if err := iter.Close(); err != nil || n != 6 {
		t.Fatalf("%d outbox rows (%v), want 6", n, err)
	}
}

// TestCassandraScanOutboxReturnsWholeEvents: the chaos checker compares
// each published record with the committed event, payload and headers
// included; a scan that left them out made every record look corrupt.
func TestCassandraScanOutboxReturnsWholeEvents(t *testing.T) {
	t.Parallel()
	s, _ := cassandra(t)
	ctx := t.Context()
	var want []outbox.Message
	for seq := int64(1); seq <= 3; seq++ {
		m, err := outbox.NewMessage(order.AggregateType, "o1", order.EventUpdated, seq, map[string]int64{"version": seq})
		if err != nil {
			t.Fatal(err)
		}
		m.Headers = map[string]string{outbox.HeaderTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
		want = append(want, m)
	}
	if err := s.AppendEvents(ctx, want...); err != nil {
		t.Fatal(err)
	}
	got, err := s.ScanOutbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("scanned %d events, want %d", len(got), len(want))
	}
	for i, g := range got {
		w := want[i]
		if g.ID != w.ID || g.Key() != w.Key() || g.Sequence != w.Sequence || g.Type != w.Type || !g.Timestamp.Equal(w.Timestamp.Truncate(time.Microsecond)) ||
			string(g.Payload) != string(w.Payload) || !maps.Equal(g.Headers, w.Headers) {
			t.Errorf("event %d scanned as\n %+v\nwant\n %+v", i, g, w)
		}
	}
}

// TestTheDriversLogGoesThroughTheStoresLogger: what gocql logs (here the
// node's warning on an aggregation over a whole table; in an outage, every
// failed reconnection) goes to the store's logger, the service's, not to
// the standard logger on stderr, where it broke the service's log format
// and flooded the chaos run's output during R6.
func TestTheDriversLogGoesThroughTheStoresLogger(t *testing.T) {
	t.Parallel()
	_, ks := cassandra(t)
	var buf syncBuf
	s, err := Open(Config{Hosts: cassandraHosts(t), Keyspace: ks, Timeout: 10 * time.Second, ProtoVersion: 4,
		Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.CountRows(t.Context()); err != nil { // SELECT count(*): Cassandra warns
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "gocql: Cluster warnings") {
		t.Fatalf("the store's logger heard %q, want the driver's warning", got)
	}
	quiet := slog.New(slog.DiscardHandler)
	s.SetLogger(quiet) // a logger set after Open takes the driver's lines too
	before := buf.String()
	if _, _, err := s.CountRows(t.Context()); err != nil {
		t.Fatal(err)
	}
	if buf.String() != before {
		t.Fatalf("the driver still logged to the first logger: %q", strings.TrimPrefix(buf.String(), before))
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
