package scylla_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/internal/scyllaemu"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/storetest"
)

// These run through CDC and scylla-cdc-go against the cluster named by
// OUTBOX_TEST_SCYLLA_HOSTS (host:port,...). No ScyllaDB can be installed
// on the project's CI machines, so there it names the ScyllaDB CDC
// emulation (internal/scyllaemu: Apache Cassandra, a trigger writing
// Scylla's CDC log, a CQL proxy for Scylla's system tables), which
// scripts/services.sh starts. Pointed at a real ScyllaDB cluster, the
// same tests run unchanged, except those that need the emulation to
// force what a cluster does only on its own (a generation switch).

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

func scyllaHosts(t testing.TB) []string {
	t.Helper()
	hosts := os.Getenv("OUTBOX_TEST_SCYLLA_HOSTS")
	if hosts == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatal("OUTBOX_TEST_SCYLLA_HOSTS is required (OUTBOX_REQUIRE_SERVICES=1): ./scripts/test.sh starts the ScyllaDB CDC emulation")
		}
		t.Skip("OUTBOX_TEST_SCYLLA_HOSTS is not set (a ScyllaDB cluster, or the emulation scripts/services.sh starts)")
	}
	return strings.Split(hosts, ",")
}

// cluster opens a fresh keyspace on the cluster, or skips.
func cluster(t testing.TB) *scylla.Store {
	t.Helper()
	hosts := scyllaHosts(t)
	ks := fmt.Sprintf("outbox_it_%d_%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
	s, err := scylla.Open(scylla.Config{Hosts: hosts, Keyspace: ks, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Session().Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
		s.Close()
	})
	if err := scylla.Migrate(context.Background(), s.Session(), ks, scylla.SchemaConfig{Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// emulated skips tests that only the emulation can run.
func emulated(t testing.TB, s *scylla.Store, why string) {
	t.Helper()
	ok, err := scyllaemu.Emulated(t.Context(), s.Session())
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skipf("needs the ScyllaDB CDC emulation: %s", why)
	}
}

// The conformance suite through CDC: per-aggregate order only, rows
// upserted rather than rejected by id, and records that arrive after the
// confidence window.
func TestScyllaConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, PerAggregateOrder: true, ReadIdle: 8 * time.Second},
		func(t *testing.T) storetest.Harness {
			s := cluster(t)
			return storetest.Harness{Store: s, Source: s.CDC(scylla.LowLatency()), Append: func(ctx context.Context, msgs []outbox.Message, fail bool) error {
				return s.AppendBatch(ctx, msgs, fail)
			}}
		})
}

func TestScyllaBatchAndCDCEndToEnd(t *testing.T) {
	t.Parallel()
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

// The whole path on the cluster: HTTP order commands → LOGGED BATCH (and
// the write-ahead intent of updates) → CDC log → scylla-cdc-go → relay →
// Apache Kafka, checked as the chaos runs are: every committed event
// published, none that was not, each order's events in order.
func TestScyllaHTTPToKafkaEndToEnd(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	brokers := testenv.KafkaBrokers(t)
	ctx := t.Context()
	template := "scyllae2e-" + s.Keyspace() + ".{aggregatetype}"
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: template})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	r, err := relay.New(s.CDC(scylla.LowLatency()), pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	srv := httptest.NewServer(httpapi.New(httpapi.Deps{Orders: order.NewService(s.Orders()), DeadLetters: s}))
	t.Cleanup(srv.Close)

	do := func(method, path, body, etag string) (int, string, string) {
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if etag != "" {
			req.Header.Set("If-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", ""
		}
		defer resp.Body.Close()
		var o struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&o)
		return resp.StatusCode, o.ID, resp.Header.Get("ETag")
	}
	// Four clients, ten orders each: create, two updates, and a cancel of
	// every other order. Each 2xx is an event the topic must hold.
	var mu sync.Mutex
	acked := map[string]int64{} // order id -> last version answered with 2xx
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for i := range 10 {
				code, id, etag := do("POST", "/orders", fmt.Sprintf(`{"customer_id":"c%d","currency":"EUR","items":[{"sku":"a","quantity":%d,"unit_price":100}]}`, c, i+1), "")
				if code != http.StatusCreated {
					t.Errorf("create: %d", code)
					return
				}
				version := int64(1)
				steps := []string{`{"address":"1 Kafka Way"}`, `{"address":"2 Kafka Way"}`}
				if i%2 == 0 {
					steps = append(steps, "cancel")
				}
				for _, step := range steps {
					path, body := "/orders/"+id, step
					method := "PATCH"
					if step == "cancel" {
						method, path, body = "POST", path+"/cancel", ""
					}
					if code, _, etag = do(method, path, body, etag); code != http.StatusOK {
						t.Errorf("%s %s: %d", method, path, code)
						return
					}
					version++
				}
				mu.Lock()
				acked[id] = version
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := 0
	for _, v := range acked {
		want += int(v)
	}
	topic := "scyllae2e-" + s.Keyspace() + "." + order.AggregateType
	var recs []kafkatest.Received
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(time.Minute); ; <-tick.C {
		if recs, err = kafkatest.ReadAll(ctx, brokers, []string{topic}); err != nil {
			t.Fatal(err)
		}
		if len(recs) >= want || time.Now().After(deadline) {
			break
		}
	}
	committed, err := s.ScanOutbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var history []checker.Event
	for _, m := range committed {
		history = append(history, checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: m.Sequence})
	}
	observed, err := checker.FromKafka(recs)
	if err != nil {
		t.Fatal(err)
	}
	report := checker.Check(history, observed, nil)
	t.Logf("HTTP → Kafka on the cluster: %d answers with 2xx, %s", want, report)
	if !report.OK() || report.Committed != want {
		t.Fatalf("%s; want %d committed events, lost 0, phantom 0, order 0", report, want)
	}
	last := map[string]int64{}
	for _, o := range observed {
		last[strings.TrimPrefix(o.Aggregate, order.AggregateType+"/")] = max(last[strings.TrimPrefix(o.Aggregate, order.AggregateType+"/")], o.Sequence)
	}
	for id, v := range acked {
		if last[id] != v {
			t.Errorf("order %s: answered version %d, the topic's last event is version %d", id, v, last[id])
		}
	}
}
