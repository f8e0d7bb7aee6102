package tracing

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/outbox-dev/outbox/internal/w3c"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// ScopeName is the instrumentation scope of the relay's spans.
const ScopeName = "github.com/outbox-dev/outbox/tracing"

// Attributes of ours, beside the messaging conventions'.
const (
	AttrAggregateType = attribute.Key("outbox.aggregate.type")
	AttrEventType     = attribute.Key("outbox.event.type")
	AttrSequence      = attribute.Key("outbox.sequence")
	AttrAttempts      = attribute.Key("outbox.publish.attempts")
	AttrCommitToAck   = attribute.Key("outbox.commit_to_ack_ms")
	AttrDeadLetter    = attribute.Key("outbox.dead_letter.id")
)

// Config configures a Hook. Its zero value works.
type Config struct {
	// Topic names a message's destination, as the publisher routes it
	// (kafka.Router.Topic for the publisher's TopicTemplate). Without
	// it, or when it fails, spans are named "send" with no destination.
	Topic func(outbox.Message) (string, error)
	// MaxOpen bounds the spans held open at once (default 16,384): a
	// message whose publish never settles (the relay stopped, a replay
	// failed) is ended, oldest first, beyond it.
	MaxOpen int
}

// Hook is a relay hook (relay.Config.Hooks) that emits a producer span per
// published message. It is safe for concurrent use.
type Hook struct {
	tracer trace.Tracer
	cfg    Config

	mu   sync.Mutex
	open map[uuid.UUID]openSpan
}

type openSpan struct {
	span  trace.Span
	start time.Time
}

var (
	_ relay.PublishStartHook = (*Hook)(nil)
	_ relay.PublishHook      = (*Hook)(nil)
	_ relay.RetryHook        = (*Hook)(nil)
	_ relay.FailHook         = (*Hook)(nil)
	_ relay.DeadLetterHook   = (*Hook)(nil)
)

// NewHook traces with tp; a nil tp traces nothing.
func NewHook(tp trace.TracerProvider, cfg Config) *Hook {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = 16384
	}
	return &Hook{tracer: tp.Tracer(ScopeName), cfg: cfg, open: map[uuid.UUID]openSpan{}}
}

func (h *Hook) topic(m outbox.Message) string {
	if h.cfg.Topic == nil {
		return ""
	}
	t, err := h.cfg.Topic(m)
	if err != nil {
		return ""
	}
	return t
}

func (h *Hook) attributes(m outbox.Message, topic string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingMessageID(m.ID.String()),
		semconv.MessagingKafkaMessageKey(m.AggregateID),
		semconv.MessagingMessageBodySize(len(m.Payload)),
		AttrAggregateType.String(m.AggregateType),
		AttrEventType.String(m.Type),
		AttrSequence.Int64(m.Sequence),
	}
	if topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
	}
	return attrs
}

func spanName(op, topic string) string {
	if topic == "" {
		return op
	}
	return op + " " + topic
}

// OnPublishStart starts a span for each message not already in flight:
// the tail of a run the broker did not acknowledge keeps its span.
func (h *Hook) OnPublishStart(msgs []outbox.Message) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		if _, ok := h.open[m.ID]; ok {
			continue
		}
		if len(h.open) >= h.cfg.MaxOpen {
			h.evictOldest()
		}
		topic := h.topic(m)
		_, span := h.tracer.Start(w3c.Extract(context.Background(), m.Headers), spanName("send", topic),
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithTimestamp(now), trace.WithAttributes(h.attributes(m, topic)...))
		h.open[m.ID] = openSpan{span: span, start: now}
	}
}

// evictOldest ends the oldest open span; h.mu is held.
func (h *Hook) evictOldest() {
	var oldest uuid.UUID
	var at time.Time
	for id, o := range h.open {
		if at.IsZero() || o.start.Before(at) {
			oldest, at = id, o.start
		}
	}
	if o, ok := h.open[oldest]; ok {
		o.span.AddEvent("abandoned: the publish never settled while tracing held it")
		o.span.End()
		delete(h.open, oldest)
	}
}

func (h *Hook) take(id uuid.UUID) (trace.Span, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o, ok := h.open[id]
	if ok {
		delete(h.open, id)
	}
	return o.span, ok
}

func (h *Hook) peek(id uuid.UUID) (trace.Span, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o, ok := h.open[id]
	return o.span, ok
}

// OnPublish ends the message's span: acknowledged.
func (h *Hook) OnPublish(m outbox.Message, attempts int, sinceCommit time.Duration) {
	span, ok := h.take(m.ID)
	if !ok {
		return // started before this hook was installed
	}
	span.SetAttributes(AttrAttempts.Int(attempts), AttrCommitToAck.Float64(float64(sinceCommit.Microseconds())/1000))
	span.SetStatus(codes.Ok, "")
	span.End()
}

// OnRetry records a failed attempt that will be retried.
func (h *Hook) OnRetry(m outbox.Message, a retry.Attempt) {
	if span, ok := h.peek(m.ID); ok {
		span.RecordError(a.Err, trace.WithAttributes(attribute.Int("outbox.attempt", a.N),
			attribute.String("outbox.retry_in", a.Delay.String())))
	}
}

// OnPublishFailed records a round of attempts that ended on a transient
// error: the message waits for the broker, its span stays open.
func (h *Hook) OnPublishFailed(m outbox.Message, attempts int, err error) {
	if span, ok := h.peek(m.ID); ok {
		span.RecordError(err, trace.WithAttributes(attribute.Int("outbox.attempts", attempts),
			attribute.String("outbox.then", "waiting for the broker")))
	}
}

// OnDeadLetter ends the message's span with an error. A message parked
// behind an earlier failure of its aggregate, never sent, gets a span of
// its own ("dead-letter {topic}") in its trace.
func (h *Hook) OnDeadLetter(dl outbox.DeadLetter) {
	span, ok := h.take(dl.Message.ID)
	if !ok {
		topic := h.topic(dl.Message)
		_, span = h.tracer.Start(w3c.Extract(context.Background(), dl.Message.Headers), spanName("dead-letter", topic),
			trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(h.attributes(dl.Message, topic)...))
	}
	span.SetAttributes(AttrDeadLetter.String(strconv.FormatInt(dl.ID, 10)), semconv.ErrorTypeOther)
	if dl.ParkedBehind != "" {
		span.SetAttributes(attribute.String("outbox.parked_behind", dl.ParkedBehind))
	}
	span.SetStatus(codes.Error, dl.Error)
	span.End()
}

// Close ends the spans of messages whose publish has not settled (the
// relay stopped): call it after the relay's Serve returned, before the
// tracer provider's Shutdown.
func (h *Hook) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, o := range h.open {
		o.span.AddEvent("relay stopped before the publish settled")
		o.span.End()
		delete(h.open, id)
	}
}
