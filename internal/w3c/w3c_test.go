package w3c_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/internal/w3c"
	"github.com/outbox-dev/outbox/internal/writertest"
	"github.com/outbox-dev/outbox/outbox"
)

func TestInjectKeepsWhatTheCallerSet(t *testing.T) {
	ctx := writertest.TraceContext(t, context.Background())
	for _, tc := range []struct {
		name string
		own  map[string]string
		want map[string]string
	}{
		{"nothing set", nil, map[string]string{"traceparent": writertest.TraceParent, "tracestate": "vendor=opaque", "baggage": "tenant=acme"}},
		{"own traceparent: no tracestate of another trace", map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"},
			map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "baggage": "tenant=acme"}},
		{"own baggage", map[string]string{"baggage": "k=v"},
			map[string]string{"traceparent": writertest.TraceParent, "tracestate": "vendor=opaque", "baggage": "k=v"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := w3c.Inject(ctx, outbox.Message{Headers: tc.own})
			if len(m.Headers) != len(tc.want) {
				t.Fatalf("headers %v, want %v", m.Headers, tc.want)
			}
			for k, v := range tc.want {
				if m.Headers[k] != v {
					t.Fatalf("headers %v, want %v", m.Headers, tc.want)
				}
			}
		})
	}
	own := map[string]string{"x": "y"}
	if m := w3c.Inject(context.Background(), outbox.Message{Headers: own}); len(m.Headers) != 1 {
		t.Fatalf("a context without a trace added headers: %v", m.Headers)
	}
}

func TestExtractIsInjectsInverse(t *testing.T) {
	ctx := writertest.TraceContext(t, context.Background())
	m := w3c.Inject(ctx, outbox.Message{})
	got := trace.SpanContextFromContext(w3c.Extract(context.Background(), m.Headers))
	want := trace.SpanContextFromContext(ctx)
	if !got.IsRemote() || got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || got.TraceState().String() != "vendor=opaque" {
		t.Fatalf("extracted %v, want %v", got, want)
	}
}
