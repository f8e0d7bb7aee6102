// Package w3c carries trace context (W3C traceparent, tracestate) and
// baggage between a context and an outbox message's headers. The writers
// inject, the relay's tracing and the inbox extract, all with the same
// propagators, whatever global propagator the application installed.
package w3c

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/outbox"
)

// Propagator is W3C Trace Context and W3C Baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Inject returns m with the trace context and baggage of ctx added to its
// headers. What the caller set wins: a message that already has a
// traceparent keeps its trace context as it is (a tracestate from another
// trace would be meaningless next to it), and a baggage header set by the
// caller is kept. m.Headers is copied, never written to.
func Inject(ctx context.Context, m outbox.Message) outbox.Message {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return m
	}
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return m
	}
	_, ownTrace := m.Headers[outbox.HeaderTraceParent]
	h := make(map[string]string, len(m.Headers)+len(carrier))
	maps.Copy(h, m.Headers)
	for k, v := range carrier {
		if _, set := m.Headers[k]; set || (ownTrace && k == "tracestate") {
			continue
		}
		h[k] = v
	}
	m.Headers = h
	return m
}

// Extract returns ctx with the remote span context and baggage found in
// headers, if any.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier(headers))
}
