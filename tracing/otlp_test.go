package tracing_test

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/outbox-dev/outbox/internal/writertest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/tracing"
)

// collector is an OTLP/HTTP receiver: it decodes each protobuf export
// request posted to /v1/traces.
type collector struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func newCollector(t *testing.T) (*collector, string) {
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %s, want /v1/traces as application/x-protobuf", r.URL.Path, r.Header.Get("Content-Type"))
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			t.Errorf("undecodable export request: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					c.services = append(c.services, kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				c.spans = append(c.spans, ss.Spans...)
			}
		}
		c.mu.Unlock()
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *collector) got() ([]*tracepb.Span, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.spans...), append([]string(nil), c.services...)
}

// publishOne drives the hook as the relay does for one traced message.
func publishOne(t *testing.T, tp *sdktrace.TracerProvider) {
	m := message(t, "u-1", 1)
	m.Headers = map[string]string{"traceparent": writertest.TraceParent}
	h := tracing.NewHook(tp, tracing.Config{Topic: func(m outbox.Message) (string, error) { return topic, nil }})
	h.OnPublishStart([]outbox.Message{m})
	h.OnPublish(m, 1, time.Millisecond)
	if err := tp.ForceFlush(t.Context()); err != nil {
		t.Fatalf("flush to the collector: %v", err)
	}
}

func checkExported(t *testing.T, c *collector, service string) {
	t.Helper()
	spans, services := c.got()
	if len(spans) != 1 || len(services) != 1 || services[0] != service {
		t.Fatalf("collector got %d spans from %v, want 1 from %s", len(spans), services, service)
	}
	s := spans[0]
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		attrs[kv.Key] = kv.GetValue().GetStringValue()
	}
	if s.Name != "send "+topic || s.Kind != tracepb.Span_SPAN_KIND_PRODUCER ||
		hex.EncodeToString(s.TraceId) != "4bf92f3577b34da6a3ce929d0e0e4736" || hex.EncodeToString(s.ParentSpanId) != "00f067aa0ba902b7" ||
		attrs["messaging.system"] != "kafka" || attrs["messaging.destination.name"] != topic {
		t.Fatalf("exported span %v, want a producer span \"send %s\" in the writer's trace", s, topic)
	}
}

func TestSpansReachAnOTLPHTTPCollector(t *testing.T) {
	c, url := newCollector(t)
	tp, err := tracing.NewTracerProvider(t.Context(), tracing.ProviderConfig{Endpoint: url, ServiceName: "signup-relay"})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Shutdown(context.WithoutCancel(t.Context()))
	publishOne(t, tp)
	checkExported(t, c, "signup-relay")
}

func TestProviderFromEnvExportsOnlyWhenConfigured(t *testing.T) {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
		"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(v, "")
	}
	if tp, err := tracing.ProviderFromEnv(t.Context(), "outbox-relay"); tp != nil || err != nil {
		t.Fatalf("no endpoint: %v, %v; want no provider", tp, err)
	}
	c, url := newCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	for name, env := range map[string][2]string{"disabled": {"OTEL_SDK_DISABLED", "true"}, "exporter none": {"OTEL_TRACES_EXPORTER", "none"}} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if tp, err := tracing.ProviderFromEnv(t.Context(), "outbox-relay"); tp != nil || err != nil {
				t.Fatalf("%v, %v; want no provider", tp, err)
			}
		})
	}
	for name, env := range map[string][2]string{"grpc": {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, "zipkin": {"OTEL_TRACES_EXPORTER", "zipkin"}} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if _, err := tracing.ProviderFromEnv(t.Context(), "outbox-relay"); err == nil {
				t.Fatalf("%s=%s was accepted", env[0], env[1])
			}
		})
	}
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	tp, err := tracing.ProviderFromEnv(t.Context(), "outbox-relay")
	if err != nil || tp == nil {
		t.Fatalf("ProviderFromEnv = %v, %v", tp, err)
	}
	defer tp.Shutdown(context.WithoutCancel(t.Context()))
	publishOne(t, tp)
	checkExported(t, c, "from-env")
}

// TestUnsettledSpansAreBoundedAndEndedOnClose: spans of publishes that
// never settle are ended, oldest first, beyond MaxOpen, and all by Close.
func TestUnsettledSpansAreBoundedAndEndedOnClose(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	h := tracing.NewHook(tp, tracing.Config{MaxOpen: 2})
	a, b, c := message(t, "a", 1), message(t, "b", 1), message(t, "c", 1)
	h.OnPublishStart([]outbox.Message{a, b})
	h.OnPublishStart([]outbox.Message{a}) // still in flight: one span
	if n := len(spans.Started()); n != 2 {
		t.Fatalf("%d spans started, want 2", n)
	}
	h.OnPublishStart([]outbox.Message{c})
	if ended := spans.Ended(); len(ended) != 1 || ended[0].Name() != "send" {
		t.Fatalf("ended %d spans, want the oldest one evicted", len(ended))
	}
	h.Close()
	if ended := spans.Ended(); len(ended) != 3 {
		t.Fatalf("after Close %d spans ended, want all 3", len(ended))
	}
	h.OnPublish(b, 1, 0) // settles after Close: nothing to end twice
	if n := len(spans.Ended()); n != 3 {
		t.Fatalf("%d spans ended, want 3", n)
	}
}
