package app_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
)

func testConfig(t *testing.T) app.Config {
	return app.Config{
		Store: "sqlite://" + filepath.Join(t.TempDir(), "outbox.db"), HTTP: "127.0.0.1:0", BrokerPort: 0,
		TopicTemplate: kafka.TopicPerAggregateType, PollInterval: 20 * time.Millisecond, BreakerTimeout: time.Second,
		OrderWorkers: 2, LogLevel: "error", LogFormat: "text",
	}
}

// panicOnce panics in the relay's worker the first time an event of the
// target aggregate is published, after the broker acknowledged it.
type panicOnce struct {
	fired  atomic.Bool
	target atomic.Value // string
}

func (p *panicOnce) OnPublish(m outbox.Message, _ int, _ time.Duration) {
	if t, _ := p.target.Load().(string); t == m.AggregateID && p.fired.CompareAndSwap(false, true) {
		panic("injected relay panic")
	}
}

var eventually = testenv.Eventually

// panickyOrders panics in the first update it runs.
type panickyOrders struct {
	httpapi.Orders
	panicked atomic.Bool
}

func (p *panickyOrders) Update(ctx context.Context, id string, in order.UpdateInput, expected int64, meta order.Meta) (order.Order, error) {
	if p.panicked.CompareAndSwap(false, true) {
		panic("injected order panic")
	}
	return p.Orders.Update(ctx, id, in, expected, meta)
}

func TestPanicsRestartOnlyTheWorkerThatPanicked(t *testing.T) {
	relayPanic := &panicOnce{}
	orders := &panickyOrders{}
	a, err := app.New(t.Context(), testConfig(t), testLog{t}, app.Options{HTTP: true, RelayConfig: func(rc *relay.Config) {
		rc.Hooks = append(rc.Hooks, relayPanic)
	}, WrapOrders: func(o httpapi.Orders) httpapi.Orders { orders.Orders = o; return orders }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	base := "http://" + a.Addr().String()
	client := &testenv.APIClient{T: t, Base: base}

	var ids []string
	for i := range 10 {
		o := client.Create(fmt.Sprintf("c%d", i))
		ids = append(ids, o)
		if i == 3 {
			relayPanic.target.Store(o)
		}
	}
	// The first update panics: that request is answered 500 and wrote
	// nothing; the server and the relay carry on.
	if code := client.Patch(ids[0], `{"address":"x"}`); code != http.StatusInternalServerError {
		t.Fatalf("update during the injected panic answered %d, want 500", code)
	}
	for _, id := range ids {
		if code := client.Patch(id, `{"address":"y"}`); code != http.StatusOK {
			t.Fatalf("update after the panic answered %d", code)
		}
	}
	eventually(t, 10*time.Second, "the relay restarted", func() bool { return a.Restarts()["relay"] == 1 })
	r := a.Restarts()
	if r["http"] != 0 || r["dlq"] != 0 || r["health"] != 0 {
		t.Fatalf("restarts %v: only the panicking workers may restart", r)
	}
	eventually(t, 10*time.Second, "backlog drained", func() bool {
		n, _ := a.Store().Unpublished(ctx)
		return n == 0 && a.Relay().Running()
	})
	rep := checkTopics(t, a)
	if !rep.OK() || rep.Committed != 20 {
		t.Fatalf("after the panics: %s", rep)
	}
	t.Logf("restarts %v; %s", r, rep)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after shutdown: %v", err)
	}
}

// checkTopics compares the outbox with the order topic.
func checkTopics(t *testing.T, a *app.App) checker.Report {
	t.Helper()
	history, err := labstore.Committed(t.Context(), a.Store())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	got, err := kafkatest.ReadAll(ctx, a.Brokers(), []string{"outbox.event.order"})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := checker.FromKafka(got)
	if err != nil {
		t.Fatal(err)
	}
	return checker.Check(history, obs, nil)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
