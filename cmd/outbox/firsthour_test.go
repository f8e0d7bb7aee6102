package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
)

// serve on SQLite shows only what applies to SQLite (no replication slot,
// no CDC log), counts dead letters and HTTP requests from the start, serves
// the console, and says when it shuts down.
func TestServeOnSQLiteShowsWhatAppliesAndLogsItsShutdown(t *testing.T) {
	logs := &testenv.CappedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--http", "127.0.0.1:0", "--broker-port", "0",
			"--store", "sqlite://" + filepath.Join(t.TempDir(), "o.db")}, logs, logs)
	}()
	var base string
	testenv.Eventually(t, 10*time.Second, "serve listening", func() bool {
		if addr := testenv.ListenAddr(logs.String(), "HTTP API listening"); addr != "" {
			base = "http://" + addr
		}
		return base != ""
	})
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	var st app.StatusDoc
	testenv.Eventually(t, 10*time.Second, "health checked", func() bool {
		json.Unmarshal([]byte(get("/status")), &st)
		return len(st.Health) > 0
	})
	for name := range st.Health {
		if name == "replication-slot" || name == "cdc-log-ttl" {
			t.Errorf("SQLite's /status lists the %s check", name)
		}
	}
	if !strings.Contains(get("/ui/"), "console.js") {
		t.Error("/ui/ is not the console")
	}
	metrics := get("/metrics")
	for _, want := range []string{`outbox_dead_lettered_total{type=""} 0`, `outbox_http_requests_total{code="200",route="GET /status"}`,
		`outbox_http_request_duration_seconds_bucket{route="GET /status"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, absent := range []string{"outbox_replication_slot_lag_bytes", "outbox_cdc_lag_seconds", "outbox_cdc_log_ttl_seconds"} {
		if strings.Contains(metrics, absent) {
			t.Errorf("SQLite's /metrics exports %s", absent)
		}
	}
	if !strings.Contains(logs.String(), "relaying") {
		t.Errorf("serve did not say what it relays:\n%s", logs)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, logs)
	}
	out := logs.String()
	if i, j := strings.Index(out, "shutting down"), strings.Index(out, "msg=stopped took="); i < 0 || j < i {
		t.Errorf("serve's shutdown is not logged:\n%s", out)
	}
}

// outbox relay --http serves the status server with the console, without
// orders, and says at start what it relays from where to where.
func TestRelayServesTheConsoleWithoutOrders(t *testing.T) {
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	logs := &testenv.CappedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"relay", "--http", "127.0.0.1:0", "--brokers", b.Addrs()[0],
			"--store", "sqlite://" + filepath.Join(t.TempDir(), "o.db")}, logs, logs)
	}()
	var base string
	testenv.Eventually(t, 10*time.Second, "relay's status server listening", func() bool {
		if addr := testenv.ListenAddr(logs.String(), "HTTP API listening"); addr != "" {
			base = "http://" + addr
		}
		return base != ""
	})
	for path, want := range map[string]int{"/ui/": 200, "/status": 200, "/status/history": 200, "/dlq": 200, "/orders/x": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("relay GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if out := logs.String(); !strings.Contains(out, "msg=relaying from=sqlite://") || !strings.Contains(out, "to="+b.Addrs()[0]) {
		t.Errorf("relay did not say what it relays:\n%s", out)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("relay exited %d:\n%s", code, logs)
	}
	if out := logs.String(); !strings.Contains(out, `msg="shutting down: stopping the API, the relay and its workers"`) ||
		!strings.Contains(out, "msg=stopped took=") {
		t.Errorf("relay --http's shutdown is not logged:\n%s", out)
	}
}
