package scylla

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/gocql/gocql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// slowNode is a toxiproxy proxy in front of a node: while slowed, every
// answer is held back longer than the client waits, so a write the node
// applies times out at the client, which cannot tell whether it applied.
type slowNode struct {
	proxy *toxiproxy.Proxy
	mu    sync.Mutex
	slow  bool
}

func proxyNode(t *testing.T, upstream string) *slowNode {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "cql", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &slowNode{proxy: p}
}

// Addr is where clients connect to reach the node through the proxy.
func (n *slowNode) Addr() string { return n.proxy.Listen }

func (n *slowNode) SetSlow(t *testing.T, slow bool) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if slow == n.slow {
		return
	}
	var err error
	if slow {
		_, err = n.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name": "slow", "type": "latency", "stream": "downstream", "attributes": {"latency": 2000}}`))
	} else {
		err = n.proxy.Toxics.RemoveToxic(t.Context(), "slow")
	}
	if err != nil {
		t.Fatal(err)
	}
	n.slow = slow
}

// cassandraThroughProxy opens a second store on ks through a proxy whose
// answers can be held back; the client gives up after 500 ms.
func cassandraThroughProxy(t *testing.T, ks string) (*Store, *slowNode) {
	t.Helper()
	node := proxyNode(t, cassandraHosts(t)[0])
	s, err := Open(Config{Hosts: []string{node.proxy.Listen}, Keyspace: ks, Timeout: 500 * time.Millisecond, ProtoVersion: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The driver prepares each statement on its first use: warm them up,
	// so a slowed answer is that of a statement the node executed.
	o := testOrder("warm-up")
	if _, _, err := s.Orders().Create(t.Context(), o, orderEvent(t, o), "", ""); err != nil {
		t.Fatal(err)
	}
	o.Version = 2
	if err := s.Orders().Update(t.Context(), o, orderEvent(t, o)); err != nil {
		t.Fatal(err)
	}
	return s, node
}

// steps records the repository's steps and lets a test act before each.
type steps struct {
	mu   sync.Mutex
	seen []string
	act  func(step string, attempt int)
}

func (s *steps) hook(step string, attempt int) {
	s.mu.Lock()
	s.seen = append(s.seen, fmt.Sprintf("%s#%d", step, attempt))
	act := s.act
	s.mu.Unlock()
	if act != nil {
		act(step, attempt)
	}
}

func (s *steps) saw(step string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.seen {
		if x == step {
			return true
		}
	}
	return false
}

func testOrder(id string) order.Order {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return order.Order{ID: id, CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}},
		Status: order.StatusPending, Total: 5, Version: 1, CreatedAt: now, UpdatedAt: now}
}

func orderEvent(t *testing.T, o order.Order) outbox.Message {
	t.Helper()
	typ := order.EventUpdated
	if o.Version == 1 {
		typ = order.EventCreated
	}
	m, err := outbox.NewMessage(order.AggregateType, o.ID, typ, o.Version, map[string]int64{"version": o.Version})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// eventRows are an order's outbox rows: sequence and write time.
func eventRows(t *testing.T, s *Store, id string) (seqs []int64, written []time.Time) {
	t.Helper()
	iter := s.session.Query(`SELECT sequence, WRITETIME(payload) FROM `+s.keyspace+`.outbox_messages WHERE aggregatetype = ? AND aggregateid = ?`,
		order.AggregateType, id).Iter()
	var seq, wt int64
	for iter.Scan(&seq, &wt) {
		seqs, written = append(seqs, seq), append(written, time.UnixMicro(wt))
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	return seqs, written
}

// A write whose answer is lost is retried with the same ids until its
// outcome is known: an order's lightweight transaction that applied is
// recognised as this request's own on the retry, and an outbox row whose
// write timed out is written again at a fresh timestamp, so neither the
// create nor the update is answered with an error, and each event has
// one row.
func TestCassandraATimedOutWriteIsRetriedUntilItsOutcomeIsKnown(t *testing.T) {
	t.Parallel()
	direct, ks := cassandra(t)
	s, node := cassandraThroughProxy(t, ks)
	ctx := t.Context()
	for _, step := range []string{"claim", "event"} {
		t.Run(step, func(t *testing.T) {
			st := &steps{act: func(at string, attempt int) {
				node.SetSlow(t, at == step && attempt == 0) // the first attempt's answer is lost
			}}
			repo := s.Orders()
			repo.hook = st.hook
			o := testOrder("o-" + step)
			if _, _, err := repo.Create(ctx, o, orderEvent(t, o), "", ""); err != nil {
				t.Fatalf("create: %v", err)
			}
			if !st.saw(step + "#1") {
				t.Fatalf("steps %v: the %s was not retried after its first answer was lost", st.seen, step)
			}
			o.Version, o.Address = 2, "2 Retry Road"
			st.seen = nil
			if err := repo.Update(ctx, o, orderEvent(t, o)); err != nil {
				t.Fatalf("update: %v", err)
			}
			if !st.saw(step + "#1") {
				t.Fatalf("steps %v: the %s was not retried after its first answer was lost", st.seen, step)
			}
			if got, err := direct.Orders().Get(ctx, o.ID); err != nil || got.Version != 2 || got.Address != o.Address {
				t.Fatalf("order %+v (%v), want version 2", got, err)
			}
			if seqs, _ := eventRows(t, direct, o.ID); fmt.Sprint(seqs) != "[1 2]" {
				t.Fatalf("event rows %v, want [1 2]", seqs)
			}
			if _, pending, _ := direct.Orders().get(ctx, o.ID); pending != nil {
				t.Fatalf("event %d still pending", pending.Sequence)
			}
		})
	}
}

// A write whose outcome stays unknown after every attempt is answered as
// unavailable (503). It may still have applied, or apply later, with its
// original timestamp, possibly after the CDC reader has passed that time;
// so its write-ahead note has the sweeper finish it: the order exists
// afterwards, and its event is written at a timestamp after the answer,
// where the reader cannot have passed it.
func TestCassandraAWriteWhoseOutcomeStaysUnknownIsAnswered503AndFinishedByTheSweeper(t *testing.T) {
	t.Parallel()
	direct, ks := cassandra(t)
	s, node := cassandraThroughProxy(t, ks)
	ctx := t.Context()
	repo := s.Orders()
	// From the lightweight transaction on, every answer is lost.
	repo.hook = func(step string, _ int) {
		if step == "claim" {
			node.SetSlow(t, true)
		}
	}
	o := testOrder("o-unknown")
	_, _, err := repo.Create(ctx, o, orderEvent(t, o), "", "")
	answered := time.Now()
	if !errors.Is(err, order.ErrUnavailable) {
		t.Fatalf("create with every answer lost: %v, want order.ErrUnavailable (503)", err)
	}
	node.SetSlow(t, false)
	if n, err := direct.Orders().RollForward(ctx, 0); err != nil || n == 0 {
		t.Fatalf("sweeper: %d, %v", n, err)
	}
	if got, err := direct.Orders().Get(ctx, o.ID); err != nil || got.Version != 1 {
		t.Fatalf("after the sweeper the order reads %+v (%v), want it created", got, err)
	}
	seqs, written := eventRows(t, direct, o.ID)
	if fmt.Sprint(seqs) != "[1]" || !written[0].After(answered) {
		t.Fatalf("event rows %v written at %v; want event 1, written after the create was answered (%v)", seqs, written, answered)
	}

	// The same for an update.
	o.Version = 2
	err = repo.Update(ctx, o, orderEvent(t, o))
	answered = time.Now()
	if !errors.Is(err, order.ErrUnavailable) {
		t.Fatalf("update with every answer lost: %v, want order.ErrUnavailable (503)", err)
	}
	node.SetSlow(t, false)
	if _, err := direct.Orders().RollForward(ctx, 0); err != nil {
		t.Fatal(err)
	}
	seqs, written = eventRows(t, direct, o.ID)
	if got, _ := direct.Orders().Get(ctx, o.ID); got.Version == 2 {
		if fmt.Sprint(seqs) != "[1 2]" || !written[1].After(answered) {
			t.Fatalf("the update applied, and its event rows are %v written at %v; want event 2 written after the answer (%v)", seqs, written, answered)
		}
	} else if fmt.Sprint(seqs) != "[1]" {
		t.Fatalf("the update did not apply, yet the event rows are %v", seqs)
	}
}

// tombstonesRead runs f with query tracing on and returns how many
// tombstone cells the node says its reads passed.
func tombstonesRead(t *testing.T, s *Store, f func()) int {
	t.Helper()
	var buf strings.Builder
	tw := gocql.NewTraceWriter(s.session, &buf)
	s.session.SetTrace(tw)
	f()
	s.session.SetTrace(nil)
	n := 0
	for _, m := range regexp.MustCompile(`(\d+) tombstone cells`).FindAllStringSubmatch(buf.String(), -1) {
		c, _ := strconv.Atoi(m[1])
		n += c
	}
	return n
}

// Notes go to a partition per minute and shard. Each completed write
// deletes its note, so a partition collects tombstones; with one
// partition for every note (earlier releases' bucket 0) each sweep read
// all of them, and Cassandra fails such a read at 100,000. Now a sweep
// reads only the minutes from its horizon on, and the horizon passes
// minutes found empty: the old tombstones are never read again, and a
// note left in a past minute is still found.
func TestCassandraNotesAreBucketedAndSweptFromAHorizon(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	base := time.Now().Truncate(time.Minute).Add(-30 * time.Minute)
	clock := &fakeClock{t: base}
	s.now = clock.now // the cluster's clock, as the sweeper reads it
	buckets := map[int32]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for minute := range 10 {
		repo := s.Orders()
		repo.now = func() time.Time { return base.Add(time.Duration(minute)*time.Minute + time.Second) }
		wg.Go(func() {
			for i := range 120 {
				id := fmt.Sprintf("done-%d-%d", minute, i)
				k, err := repo.writeNote(ctx, id, 2, "")
				if err != nil {
					t.Error(err)
					return
				}
				repo.dropNote(ctx, k)
				// And what every update did before: one partition.
				if err := s.session.Query(`INSERT INTO `+ks+`.order_intents (bucket, order_id, version, created_at) VALUES (0, ?, 2, 0)`, id).Exec(); err != nil {
					t.Error(err)
					return
				}
				if err := s.session.Query(`DELETE FROM `+ks+`.order_intents WHERE bucket = 0 AND order_id = ? AND version = 2`, id).Exec(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				buckets[k.bucket] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(buckets) < 40 {
		t.Fatalf("1,200 notes over 10 minutes went to %d partitions, want them spread over minutes and shards", len(buckets))
	}
	// A writer that died after noting an update, 25 minutes ago.
	died := s.Orders()
	died.now = func() time.Time { return base.Add(5 * time.Minute) }
	o := testOrder("left")
	if _, _, err := s.Orders().Create(ctx, o, orderEvent(t, o), "", ""); err != nil {
		t.Fatal(err)
	}
	o.Version = 2
	died.crashAfterClaim = true
	if err := died.Update(ctx, o, orderEvent(t, o)); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	clock.t = base.Add(30 * time.Minute)
	if n, err := s.Orders().RollForward(ctx, 30*time.Second); err != nil || n < 1 {
		t.Fatalf("first sweep: %d, %v", n, err)
	}
	if seqs, _ := eventRows(t, s, "left"); fmt.Sprint(seqs) != "[1 2]" {
		t.Fatalf("the note left 25 minutes ago was not finished: events %v", seqs)
	}
	var horizon int64
	if err := s.session.Query(`SELECT next FROM ` + ks + `.outbox_sequences WHERE name = 'order_intents_horizon'`).Scan(&horizon); err != nil {
		t.Fatal(err)
	}
	if want := minuteOf(clock.t.Add(-noteSkew)); horizon != want {
		t.Fatalf("horizon at minute %d, want %d (ten minutes before the cluster's time)", horizon, want)
	}
	before := tombstonesRead(t, s, func() {
		if err := s.session.Query(`SELECT order_id FROM ` + ks + `.order_intents WHERE bucket = 0`).Exec(); err != nil {
			t.Fatal(err)
		}
	})
	swept := tombstonesRead(t, s, func() {
		if _, err := s.Orders().RollForward(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("tombstones read: %d by one read of the old single partition, %d by a whole sweep now", before, swept)
	if before < 1000 || swept > 100 {
		t.Fatalf("tombstones read: %d by the old partition's read (want 1,200), %d by a sweep (want none of the 1,200 passed minutes')", before, swept)
	}
}

// breakableDialer dials connections whose writes fail once it is broken,
// as a socket does whose peer was SIGKILLed (EPIPE): the request never
// reaches the node.
type breakableDialer struct{ broken atomic.Bool }

func (d *breakableDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &breakableConn{Conn: c, d: d}, nil
}

type breakableConn struct {
	net.Conn
	d *breakableDialer
}

func (c *breakableConn) Write(b []byte) (int, error) {
	if c.d.broken.Load() {
		c.Conn.Close()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
	}
	return c.Conn.Write(b)
}

// TestCassandraARequestTheNodeNeverReceivedIsAnswered503: when the node
// dies (chaos R6 SIGKILLs it), requests on the connections it left are
// not sent: the driver reports them not executed (a broken pipe, a closed
// connection). They are the cluster's unavailability, answered 503, not
// 500 (found by R6 on the ScyllaDB emulation: "claim idempotency key:
// gocql: connection closed waiting for response (potentially executed:
// false)" answered 500).
func TestCassandraARequestTheNodeNeverReceivedIsAnswered503(t *testing.T) {
	t.Parallel()
	_, ks := cassandra(t)
	d := &breakableDialer{}
	s, err := open(Config{Hosts: cassandraHosts(t), Keyspace: ks, Timeout: 10 * time.Second, ProtoVersion: 4}, func(c *gocql.ClusterConfig) {
		c.Dialer = d
		c.NumConns = 1
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	o := testOrder("o1")
	if _, _, err := s.Orders().Create(ctx, o, orderEvent(t, o), "key-1", "h1"); err != nil {
		t.Fatal(err)
	}
	d.broken.Store(true)
	for _, tc := range []struct {
		what string
		op   func() error
	}{
		{"create with a key", func() error {
			o := testOrder("o2")
			_, _, err := s.Orders().Create(ctx, o, orderEvent(t, o), "key-2", "h2")
			return err
		}},
		{"create", func() error {
			o := testOrder("o3")
			_, _, err := s.Orders().Create(ctx, o, orderEvent(t, o), "", "")
			return err
		}},
		{"update", func() error {
			o := testOrder("o1")
			o.Version = 2
			return s.Orders().Update(ctx, o, orderEvent(t, o))
		}},
		{"read", func() error { _, err := s.Orders().Get(ctx, "o1"); return err }},
	} {
		if err := tc.op(); !errors.Is(err, order.ErrUnavailable) {
			t.Errorf("%s on a dead connection: %v, want order.ErrUnavailable (503)", tc.what, err)
		}
	}
}
