package tracing_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/sqloutbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
	"github.com/outbox-dev/outbox/tracing"
)

const topic = "outbox.event.user"

// pipeline is a writer's database, the relay with the tracing hook, and
// the in-process broker, all traced into one span recorder.
type pipeline struct {
	store  *sqlite.Store
	broker *kafka.Embedded
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	relay  *relay.Relay
	hook   *tracing.Hook
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	ctx := t.Context()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "app.db"), sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.MigrateOutboxOnly(ctx); err != nil {
		t.Fatal(err)
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: broker.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	router, err := kafka.NewRouter(kafka.TopicPerAggregateType)
	if err != nil {
		t.Fatal(err)
	}
	hook := tracing.NewHook(tp, tracing.Config{Topic: router.Topic})
	src, err := poll.NewSource(store, poll.Config{Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(src, pub, store, relay.Config{Hooks: []relay.Hook{hook}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	return &pipeline{store: store, broker: broker, spans: spans, tp: tp, relay: r, hook: hook}
}

// write appends msgs in one transaction under ctx.
func (p *pipeline) write(t *testing.T, ctx context.Context, msgs ...outbox.Message) {
	t.Helper()
	tx, err := p.store.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := sqloutbox.AppendSQLite(ctx, tx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// relaySpans are the ended spans of the tracing hook's scope.
func (p *pipeline) relaySpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range p.spans.Ended() {
		if s.InstrumentationScope().Name == tracing.ScopeName {
			out = append(out, s)
		}
	}
	return out
}

func (p *pipeline) spanOf(t *testing.T, m outbox.Message, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	testenv.Eventually(t, 10*time.Second, name+" span of "+m.AggregateID, func() bool {
		for _, s := range p.relaySpans() {
			if s.Name() == name && attrs(s)["messaging.message.id"] == m.ID.String() {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

func message(t *testing.T, agg string, seq int64) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage("user", agg, "UserChanged", seq, map[string]int64{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func isChildOf(s sdktrace.ReadOnlySpan, parent trace.SpanContext) bool {
	return s.Parent().TraceID() == parent.TraceID() && s.Parent().SpanID() == parent.SpanID()
}

// TestEachPublishIsAProducerSpanInTheWritersTrace: the writer appends
// under its span; the relay's span for each event is a producer span,
// child of it, with the messaging conventions' attributes; an event
// written outside any trace starts a trace of its own.
func TestEachPublishIsAProducerSpanInTheWritersTrace(t *testing.T) {
	p := newPipeline(t)
	ctx, writer := p.tp.Tracer("writer").Start(t.Context(), "signup")
	a1, a2 := message(t, "u-1", 1), message(t, "u-1", 2)
	p.write(t, ctx, a1, a2)
	writer.End()
	untraced := message(t, "u-2", 1)
	p.write(t, context.Background(), untraced)

	for _, m := range []outbox.Message{a1, a2} {
		s := p.spanOf(t, m, "send "+topic)
		if s.SpanKind() != trace.SpanKindProducer || !isChildOf(s, writer.SpanContext()) {
			t.Fatalf("span of #%d: kind %v parent %v; want a producer span, child of the writer's %v", m.Sequence, s.SpanKind(), s.Parent(), writer.SpanContext())
		}
		a := attrs(s)
		for k, v := range map[string]string{
			"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
			"messaging.destination.name": topic, "messaging.message.id": m.ID.String(), "messaging.kafka.message.key": "u-1",
			"outbox.aggregate.type": "user", "outbox.event.type": "UserChanged", "outbox.sequence": "1",
		} {
			if k == "outbox.sequence" {
				v = a[k] // checked below
			}
			if a[k] != v {
				t.Errorf("span of #%d: %s = %q, want %q", m.Sequence, k, a[k], v)
			}
		}
		if a["outbox.sequence"] != map[int64]string{1: "1", 2: "2"}[m.Sequence] || s.Status().Code != codes.Ok || a["outbox.publish.attempts"] != "1" {
			t.Errorf("span of #%d: sequence %s, status %v, attempts %s", m.Sequence, a["outbox.sequence"], s.Status(), a["outbox.publish.attempts"])
		}
	}
	s := p.spanOf(t, untraced, "send "+topic)
	if s.Parent().IsValid() || s.SpanContext().TraceID() == writer.SpanContext().TraceID() {
		t.Fatalf("an untraced event's span has parent %v, want a root of its own trace", s.Parent())
	}
	for _, r := range readTopic(t, p.broker.Addrs(), 3) {
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if string(r.Key) == "u-1" && h["traceparent"] != traceparent(writer.SpanContext()) {
			t.Fatalf("record traceparent %q, want the writer's %q", h["traceparent"], traceparent(writer.SpanContext()))
		}
	}
}

// readTopic reads n records of topic from its start.
func readTopic(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", len(out), n, ctx.Err())
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func traceparent(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
}

// TestDeadLettersKeepTheTraceAndTheirReplayIsTracedInIt: the broker
// refuses an event for good; its span ends in error; the aggregate's next
// event, parked behind it, gets a dead-letter span; both dead letters
// keep the writer's trace headers, and their replay is traced in the
// writer's trace again.
func TestDeadLettersKeepTheTraceAndTheirReplayIsTracedInIt(t *testing.T) {
	p := newPipeline(t)
	refused := p.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.PolicyViolation, Count: -1})
	ctx, writer := p.tp.Tracer("writer").Start(t.Context(), "signup")
	first, second := message(t, "u-1", 1), message(t, "u-1", 2)
	p.write(t, ctx, first)
	writer.End()
	failed := p.spanOf(t, first, "send "+topic)
	if failed.Status().Code != codes.Error || !isChildOf(failed, writer.SpanContext()) {
		t.Fatalf("the refused event's span: status %v parent %v; want an error in the writer's trace", failed.Status(), failed.Parent())
	}
	p.write(t, ctx, second)
	parked := p.spanOf(t, second, "dead-letter "+topic)
	if parked.Status().Code != codes.Error || !isChildOf(parked, writer.SpanContext()) || attrs(parked)["outbox.parked_behind"] != first.ID.String() {
		t.Fatalf("the parked event's span: status %v parent %v attrs %v", parked.Status(), parked.Parent(), attrs(parked))
	}
	entries, err := p.store.ParkedMessages(t.Context(), first.Key())
	if err != nil || len(entries) != 2 {
		t.Fatalf("parked entries %v, %v", entries, err)
	}
	for _, e := range entries {
		if e.Message.Headers["traceparent"] != traceparent(writer.SpanContext()) {
			t.Fatalf("dead letter %d lost its trace: headers %v", e.ID, e.Message.Headers)
		}
	}

	refused.Remove()
	before := len(p.relaySpans())
	if err := p.store.RequestAction(t.Context(), first.Key(), outbox.ActionRequest{Action: outbox.ActionReplay, Entry: entries[0].ID}); err != nil {
		t.Fatal(err)
	}
	p.relay.Poke()
	testenv.Eventually(t, 10*time.Second, "the replay's spans", func() bool { return len(p.relaySpans()) >= before+2 })
	for _, s := range p.relaySpans()[before:] {
		if s.Name() != "send "+topic || s.Status().Code != codes.Ok || !isChildOf(s, writer.SpanContext()) {
			t.Fatalf("replay span %q status %v parent %v; want a sent span in the writer's trace", s.Name(), s.Status(), s.Parent())
		}
	}
}
