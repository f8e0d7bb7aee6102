package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// otlpReceiver is an OTLP/HTTP collector: it decodes each protobuf export
// posted to /v1/traces.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		raw, err := io.ReadAll(body)
		var export coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(raw, &export)
		}
		if req.URL.Path != "/v1/traces" || err != nil {
			t.Errorf("export to %s: %v", req.URL.Path, err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *otlpReceiver) got() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

const writerTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// relayOneTracedEvent runs `outbox relay` on SQLite and kfake, publishes
// one event written in a traced request, and stops the relay.
func relayOneTracedEvent(t *testing.T) (logs string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.MigrateOutboxOnly(t.Context()); err != nil {
		t.Fatal(err)
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	out, stop := runRelay(t, "--store", "sqlite://"+path, "--brokers", broker.Addrs()[0], "--poll-interval", "10ms")
	m, err := outbox.NewMessage("signup", "u-1", "UserSignedUp", 1, map[string]string{"email": "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	m.Headers = map[string]string{"traceparent": writerTraceParent}
	tx, err := s.DB().BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t.Context(), tx, m); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the event is published", func() bool {
		recs, err := kafkatest.ReadAll(t.Context(), broker.Addrs(), []string{"outbox.event.signup"})
		return err == nil && len(recs) == 1
	})
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, out)
	}
	return out.String()
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, outbox relay sends a producer span
// per published message, in the writer's trace, to the collector; the
// spans are flushed when it exits (well before the exporter's 5 s batch).
func TestTheRelayExportsSpansWhenOTLPIsConfigured(t *testing.T) {
	receiver, url := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	t.Setenv("OTEL_SERVICE_NAME", "")
	logs := relayOneTracedEvent(t)
	spans := receiver.got()
	if len(spans) != 1 {
		t.Fatalf("the collector got %d spans, want 1\n%s", len(spans), logs)
	}
	s := spans[0]
	if s.Name != "send outbox.event.signup" || s.Kind != tracepb.Span_SPAN_KIND_PRODUCER ||
		hex.EncodeToString(s.TraceId) != "4bf92f3577b34da6a3ce929d0e0e4736" || hex.EncodeToString(s.ParentSpanId) != "00f067aa0ba902b7" {
		t.Fatalf("span %v, want a producer span \"send outbox.event.signup\" in the writer's trace", s)
	}
}

func TestTheRelayTracesNothingWithoutOTLPConfigured(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if logs := relayOneTracedEvent(t); strings.Contains(logs, "tracing") {
		t.Fatalf("the relay traces without an OTLP endpoint:\n%s", logs)
	}
}

// outbox serve traces like outbox relay: an order created in a traced
// request gives one producer span in the request's trace, exported by
// OTLP/HTTP and flushed when serve exits.
func TestServeExportsSpansWhenOTLPIsConfigured(t *testing.T) {
	receiver, url := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	t.Setenv("OTEL_SERVICE_NAME", "")
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	logs := &testenv.CappedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--http", "127.0.0.1:0", "--store", "sqlite://" + filepath.Join(t.TempDir(), "o.db"),
			"--brokers", broker.Addrs()[0], "--topic-template", "otel.{aggregatetype}", "--poll-interval", "10ms"}, logs, logs)
	}()
	var base string
	testenv.Eventually(t, 20*time.Second, "serve listening", func() bool {
		addr := testenv.ListenAddr(logs.String(), "HTTP API listening")
		base = "http://" + addr
		return addr != ""
	})
	c := &testenv.APIClient{T: t, Base: base}
	resp, body := c.Do("POST", "/orders", `{"customer_id":"c1","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`,
		map[string]string{"traceparent": writerTraceParent})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	testenv.Eventually(t, 20*time.Second, "the order's event is published", func() bool {
		recs, err := kafkatest.ReadAll(t.Context(), broker.Addrs(), []string{"otel.order"})
		return err == nil && len(recs) == 1
	})
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d\n%s", code, logs)
	}
	var producers []*tracepb.Span
	for _, s := range receiver.got() {
		if s.Kind == tracepb.Span_SPAN_KIND_PRODUCER {
			producers = append(producers, s)
		}
	}
	if len(producers) != 1 {
		t.Fatalf("the collector got %d producer spans, want 1\n%s", len(producers), logs)
	}
	if s := producers[0]; s.Name != "send otel.order" ||
		hex.EncodeToString(s.TraceId) != "4bf92f3577b34da6a3ce929d0e0e4736" || hex.EncodeToString(s.ParentSpanId) != "00f067aa0ba902b7" {
		t.Fatalf("span %v, want \"send otel.order\" in the request's trace", s)
	}
}
