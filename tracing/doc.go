// Package tracing follows each outbox event through OpenTelemetry, from
// the writer's trace to the Kafka record.
//
// The writers (pgxoutbox, sqloutbox, the stores' Append) store the trace
// context and baggage of the caller's context in the message headers
// (W3C traceparent, tracestate, baggage); every header reaches the record.
// Hook, a relay hook, emits one producer span per message the relay
// publishes, a child of that trace, following the OpenTelemetry messaging
// conventions: "send {topic}", messaging.system=kafka,
// messaging.operation.type=send, messaging.destination.name,
// messaging.message.id (the event id), messaging.kafka.message.key. The
// span lasts from the message's first attempt to its acknowledgement, and
// records failed attempts as events; a message dead-lettered ends its
// span with an error status, and keeps its headers, so a replay is traced
// in the original trace again. Consumers join the trace with package
// inbox (Config.TracerProvider) or w3c propagation of the headers.
//
// Export is configured the OpenTelemetry way: ProviderFromEnv returns an
// OTLP/HTTP tracer provider when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and nil when not, so nothing
// is traced or exported unless asked for.
//
//	tp, err := tracing.ProviderFromEnv(ctx, "outbox-relay")
//	if tp != nil {
//		defer tp.Shutdown(context.WithoutCancel(ctx))
//		router, _ := kafka.NewRouter(kafka.TopicPerAggregateType)
//		cfg.Hooks = append(cfg.Hooks, tracing.NewHook(tp, tracing.Config{Topic: router.Topic}))
//	}
package tracing
