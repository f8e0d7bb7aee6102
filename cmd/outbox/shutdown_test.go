package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// logField returns the value of key on the first log line holding msg.
func logField(log, msg, key string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			if _, rest, ok := strings.Cut(l, key+"="); ok {
				return strings.Fields(rest)[0]
			}
		}
	}
	return ""
}

// A graceful stop (SIGTERM cancels the command's context) with publishes
// in flight: they drain, the last checkpoint covers them, and the serve
// that starts next on the same store publishes nothing twice.
func TestGracefulStopWithPublishesInFlightLeavesNoDuplicates(t *testing.T) {
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A slow broker: every produce is answered 300 ms late, so publishes
	// are in flight whenever the stop comes.
	var slow atomic.Bool
	slow.Store(true)
	cl := b.Cluster()
	cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if slow.Load() {
			cl.SleepControl(func() { <-time.After(300 * time.Millisecond) })
		}
		return nil, nil, false
	})
	store := "sqlite://" + filepath.Join(t.TempDir(), "o.db")
	serve := func() (c *testenv.APIClient, stop func() int, logs *testenv.CappedBuffer) {
		logs = &testenv.CappedBuffer{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--http", "127.0.0.1:0", "--store", store, "--brokers", b.Addrs()[0],
				"--poll-interval", "10ms", "--topic-template", "stop.{aggregatetype}"}, logs, logs)
		}()
		var once atomic.Bool
		stop = func() int {
			if !once.CompareAndSwap(false, true) {
				return 0
			}
			cancel()
			return <-done
		}
		t.Cleanup(func() { stop() })
		c = &testenv.APIClient{T: t}
		testenv.Eventually(t, 10*time.Second, "serve listening", func() bool {
			addr := logField(logs.String(), "HTTP API listening", "addr")
			c.Base = "http://" + addr
			return addr != ""
		})
		return c, stop, logs
	}
	status := func(c *testenv.APIClient) app.StatusDoc {
		_, body := c.Do("GET", "/status", "", nil)
		var st app.StatusDoc
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("status %s: %v", body, err)
		}
		return st
	}

	c, stop, logs := serve()
	// Orders keep coming until the stop, so there is always a publish in
	// flight (kgo would otherwise batch a burst into one request).
	writing := make(chan struct{})
	var created atomic.Int64
	go func() {
		defer close(writing)
		for i := 0; ; i++ {
			resp, err := http.Post(c.Base+"/orders", "application/json",
				strings.NewReader(fmt.Sprintf(`{"customer_id":"c%d","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`, i)))
			if err != nil {
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				return
			}
			created.Add(1)
		}
	}()
	var before app.StatusDoc
	testenv.Eventually(t, 20*time.Second, "some published and some in flight", func() bool {
		before = status(c)
		return before.Published >= 20 && before.InFlight > 0
	})
	stopped := time.Now()
	if code := stop(); code != 0 {
		t.Fatalf("serve exited %d on a graceful stop:\n%s", code, logs)
	}
	if took := time.Since(stopped); took > 7*time.Second {
		t.Fatalf("the stop took %s: in-flight publishes get 5 s", took)
	}
	<-writing

	slow.Store(false)
	c, _, logs = serve()
	testenv.Eventually(t, 20*time.Second, "the backlog published", func() bool {
		st := status(c)
		return st.Backlog == 0 && st.LagEvents == 0 && st.InFlight == 0
	})
	s, err := sqlite.Open(t.Context(), strings.TrimPrefix(store, "sqlite://"), sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, events, err := labstore.CountRows(t.Context(), s)
	if err != nil || events < created.Load() {
		t.Fatalf("%d events in the outbox (%v), %d orders created", events, err, created.Load())
	}
	recs, err := kafkatest.ReadAll(t.Context(), b.Addrs(), []string{"stop.order"})
	if err != nil {
		t.Fatal(err)
	}
	copies := map[string]int{}
	dup := 0
	for _, r := range recs {
		if copies[r.Headers["id"]]++; copies[r.Headers["id"]] > 1 {
			dup++
		}
	}
	if dup != 0 || int64(len(copies)) != events {
		t.Fatalf("after a graceful stop with %d publishes in flight (%d published): %d records of %d events for %d in the outbox, %d duplicates",
			before.InFlight, before.Published, len(recs), len(copies), events, dup)
	}
}
