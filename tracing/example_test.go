package tracing_test

import (
	"fmt"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/tracing"
)

// The hook on a relay, with the publisher's routing for span names. Here
// spans go to a recorder; tracing.ProviderFromEnv gives an OTLP exporter.
func ExampleNewHook() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	router, _ := kafka.NewRouter(kafka.TopicPerAggregateType)
	hook := tracing.NewHook(tp, tracing.Config{Topic: router.Topic})
	_ = relay.Config{Hooks: []relay.Hook{hook}} // relay.New(src, pub, store, cfg)

	// What the relay calls around one publish:
	m, _ := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
	m.Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	hook.OnPublishStart([]outbox.Message{m})
	hook.OnPublish(m, 1, 3*time.Millisecond)

	s := spans.Ended()[0]
	fmt.Println(s.Name(), s.SpanKind(), s.Parent().TraceID(), s.Parent().SpanID())
	// Output: send outbox.event.user producer 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7
}
