package scylla_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/storetest"
)

// The review's risks for the ScyllaDB path (issue 14), each run through
// the real reader on the cluster (or the emulation).

func newOrder(id string) order.Order {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return order.Order{ID: id, CustomerID: "c1", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 5}},
		Status: order.StatusPending, Total: 5, Version: 1, CreatedAt: now, UpdatedAt: now}
}

func newEvent(t *testing.T, o order.Order) outbox.Message {
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

// inOrder checks that each aggregate's first occurrences come in sequence
// order 1..want[agg].
func inOrder(t *testing.T, got []outbox.Message, want map[string]int64) {
	t.Helper()
	next := map[string]int64{}
	for _, m := range got {
		if m.Sequence <= next[m.AggregateID] {
			continue // a duplicate
		}
		if m.Sequence != next[m.AggregateID]+1 {
			t.Fatalf("%s#%d published after %s#%d: out of order", m.AggregateID, m.Sequence, m.AggregateID, next[m.AggregateID])
		}
		next[m.AggregateID] = m.Sequence
	}
	for agg, n := range want {
		if next[agg] != n {
			t.Fatalf("%s: published up to #%d, want #%d", agg, next[agg], n)
		}
	}
}

// Item 2. Writes whose answers are lost: one answered 503 (its
// lightweight transaction applied, every answer lost), an update whose
// writer died after its transaction, and a create that applied late,
// stamped a minute back (a Paxos round finished late keeps its ballot's
// time) after the reader had passed that time. The sweeper finishes each,
// writing its event at a fresh timestamp: all are published.
func TestScyllaWritesWhoseOutcomeWasUnknownArePublished(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	pub := &recorder{}
	r, err := relay.New(s.CDC(scylla.LowLatency()), pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	node := scylla.ProxyNode(t, scyllaHosts(t)[0])
	p, err := scylla.Open(scylla.Config{Hosts: []string{node.Addr()}, Keyspace: s.Keyspace(), Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	// The driver prepares each statement on its first use: warm them up.
	warm := newOrder("warm")
	if _, _, err := p.Orders().Create(ctx, warm, newEvent(t, warm), "", ""); err != nil {
		t.Fatal(err)
	}
	warm.Version = 2
	if err := p.Orders().Update(ctx, warm, newEvent(t, warm)); err != nil {
		t.Fatal(err)
	}

	unknown := newOrder("unknown")
	slowFromClaim := p.Orders().BeforeStep(func(step string, _ int) {
		if step == "claim" {
			node.SetSlow(t, true)
		}
	})
	if _, _, err := slowFromClaim.Create(ctx, unknown, newEvent(t, unknown), "", ""); !errors.Is(err, order.ErrUnavailable) {
		t.Fatalf("a create whose every answer was lost: %v, want order.ErrUnavailable (503)", err)
	}
	node.SetSlow(t, false)

	crashed := newOrder("crashed")
	if _, _, err := p.Orders().Create(ctx, crashed, newEvent(t, crashed), "", ""); err != nil {
		t.Fatal(err)
	}
	crashed.Version = 2
	if err := p.Orders().CrashingAfterClaim().Update(ctx, crashed, newEvent(t, crashed)); err == nil {
		t.Fatal("the crashing update did not crash")
	}

	late := newOrder("late")
	lateEv := newEvent(t, late)
	pending, _ := json.Marshal(map[string]any{"event": lateEv})
	items, _ := json.Marshal(late.Items)
	lateAt := time.Now().Add(-time.Minute)
	if err := s.Session().Query(`INSERT INTO `+s.Keyspace()+`.orders (id, customer_id, items, currency, address, status, total, version,
		created_at, updated_at, pending_event, pending_event_id, last_event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`,
		late.ID, late.CustomerID, string(items), late.Currency, late.Address, string(late.Status), late.Total, late.Version,
		late.CreatedAt.UnixMicro(), late.UpdatedAt.UnixMicro(), string(pending), gocql.UUID(lateEv.ID), gocql.UUID(lateEv.ID), lateAt.UnixMicro()).Exec(); err != nil {
		t.Fatal(err)
	}
	if err := s.Orders().NoteAt(ctx, lateAt, late.ID, 1); err != nil {
		t.Fatal(err)
	}

	if _, err := s.Orders().RollForward(ctx, 0); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"warm": 2, "unknown": 1, "crashed": 2, "late": 1}
	testenv.Eventually(t, 30*time.Second, "every event published", func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		seen := map[string]int64{}
		for _, m := range pub.got {
			seen[m.AggregateID] = max(seen[m.AggregateID], m.Sequence)
		}
		for agg, n := range want {
			if seen[agg] != n {
				return false
			}
		}
		return true
	})
	pub.mu.Lock()
	inOrder(t, pub.got, want)
	pub.mu.Unlock()
	for id, v := range map[string]int64{"unknown": 1, "crashed": 2, "late": 1} {
		if got, err := s.Orders().Get(ctx, id); err != nil || got.Version != v {
			t.Fatalf("order %s: %+v (%v), want version %d", id, got, err, v)
		}
	}
}

// Item 3. Instances whose clocks are an hour ahead and an hour behind
// write the same orders in turns: CDC delivers each order's events in
// order, at once (not an hour late), and every update is kept.
func TestScyllaSkewedClocksKeepEachOrdersEventsInOrder(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	pub := &recorder{}
	r, err := relay.New(s.CDC(scylla.LowLatency()), pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	repos := []scylla.Orders{
		s.OrdersWithClock(func() time.Time { return time.Now().Add(time.Hour) }),
		s.OrdersWithClock(func() time.Time { return time.Now().Add(-time.Hour) }),
	}
	want := map[string]int64{}
	for i := range 4 {
		o := newOrder(fmt.Sprintf("skew%d", i))
		if _, _, err := repos[i%2].Create(ctx, o, newEvent(t, o), "", ""); err != nil {
			t.Fatal(err)
		}
		for v := int64(2); v <= 4; v++ {
			o.Version, o.Address = v, fmt.Sprintf("address %d", v)
			if err := repos[(i+int(v))%2].Update(ctx, o, newEvent(t, o)); err != nil {
				t.Fatalf("%s to version %d: %v", o.ID, v, err)
			}
		}
		want[o.ID] = 4
	}
	testenv.Eventually(t, 30*time.Second, "16 events published", func() bool { return len(pub.ids()) == 16 })
	pub.mu.Lock()
	inOrder(t, pub.got, want)
	pub.mu.Unlock()
	for id := range want {
		if got, err := s.Orders().Get(ctx, id); err != nil || got.Version != 4 || got.Address != "address 4" {
			t.Fatalf("order %s reads %+v (%v): an update was lost", id, got, err)
		}
	}
}

// progressWrites counts the statements that write CDC progress, per
// stream.
type progressWrites struct {
	mu       sync.Mutex
	byStream map[string]int
}

func (p *progressWrites) ObserveQuery(_ context.Context, q gocql.ObservedQuery) {
	if !strings.Contains(q.Statement, "outbox_cdc_progress") || strings.HasPrefix(strings.TrimSpace(q.Statement), "SELECT") {
		return
	}
	for _, v := range q.Values {
		if stream, ok := v.([]byte); ok {
			p.mu.Lock()
			p.byStream[string(stream)]++
			p.mu.Unlock()
		}
	}
}

func (p *progressWrites) most() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	most := 0
	for _, n := range p.byStream {
		most = max(most, n)
	}
	return most
}

// Item 7. While one aggregate's changes flow for three seconds, its
// stream's progress is written about once a second, not at every
// 50 ms commit.
func TestScyllaProgressIsNotWrittenAtEveryCommit(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	obs := &progressWrites{byStream: map[string]int{}}
	rs, err := scylla.Open(scylla.Config{Hosts: scyllaHosts(t), Keyspace: s.Keyspace(), Timeout: 20 * time.Second, QueryObserver: obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	pub := &recorder{}
	r, err := relay.New(rs.CDC(scylla.LowLatency()), pub, rs, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	tick := time.NewTicker(30 * time.Millisecond)
	defer tick.Stop()
	for seq := int64(1); seq <= 100; seq++ {
		<-tick.C
		if err := s.AppendEvents(ctx, storetest.Msg(t, "busy", seq)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, "100 events published", func() bool { return pub.count() == 100 })
	// Three seconds of changes on one stream: about three writes, and
	// one more to create its row.
	if n := obs.most(); n > 8 {
		t.Fatalf("%d progress writes of one stream for 100 changes over 3 s: progress follows every commit", n)
	} else {
		t.Logf("%d progress writes of the busy stream for 100 changes over 3 s", n)
	}
}

// Item 8. A write consistency the CDC reader's LOCAL_QUORUM may not see
// is refused, and pinning the client to the cluster's data centre works.
func TestScyllaRefusesWritesItsReaderMayMiss(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	for _, c := range []gocql.Consistency{gocql.One, gocql.LocalOne} {
		if _, err := scylla.Open(scylla.Config{Hosts: scyllaHosts(t), Keyspace: s.Keyspace(), Consistency: c}); !errors.Is(err, scylla.ErrUnsafeConsistency) {
			t.Fatalf("consistency %s: %v, want ErrUnsafeConsistency", c, err)
		}
	}
	var dc string
	if err := s.Session().Query(`SELECT data_center FROM system.local`).Scan(&dc); err != nil {
		t.Fatal(err)
	}
	pinned, err := scylla.Open(scylla.Config{Hosts: scyllaHosts(t), Keyspace: s.Keyspace(), LocalDC: dc})
	if err != nil {
		t.Fatalf("local_dc=%s: %v", dc, err)
	}
	pinned.Close()
}
