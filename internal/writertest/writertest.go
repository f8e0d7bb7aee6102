// Package writertest holds what the writer packages' tests share: a trace
// context to write under, and the check that it reached the headers.
package writertest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/outbox"
)

// TraceParent is the traceparent of TraceContext's span.
const TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TraceContext returns ctx carrying a sampled remote span, a tracestate
// and baggage, as a request traced by OpenTelemetry would.
func TraceContext(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, err := trace.ParseTraceState("vendor=opaque")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	m, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	b, err := baggage.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return baggage.ContextWithBaggage(trace.ContextWithSpanContext(ctx, sc), b)
}

// CheckTraceHeaders fails t unless got carries TraceContext's trace
// context and baggage, and the caller's own header.
func CheckTraceHeaders(t testing.TB, got outbox.Message) {
	t.Helper()
	want := map[string]string{"traceparent": TraceParent, "tracestate": "vendor=opaque", "baggage": "tenant=acme", "own": "kept"}
	for k, v := range want {
		if got.Headers[k] != v {
			t.Errorf("header %s = %q, want %q (headers %v)", k, got.Headers[k], v, got.Headers)
		}
	}
}
