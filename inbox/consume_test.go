package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/inbox"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/internal/writertest"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// brokerTargets: the in-process broker always, Apache Kafka when the
// environment provides it.
func brokerTargets(t *testing.T) map[string][]string {
	e, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	targets := map[string][]string{"kfake": e.Addrs()}
	t.Run("apache-kafka-available", func(t *testing.T) { targets["apache-kafka"] = testenv.KafkaBrokers(t) })
	return targets
}

// newTopic creates a topic of its own with partitions partitions.
func newTopic(t *testing.T, brokers []string, partitions int32) string {
	t.Helper()
	topic := fmt.Sprintf("inbox.%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	return topic
}

func consumerClient(t *testing.T, brokers []string, group, topic string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// seen collects what OnProcessed heard.
type seen struct {
	mu  sync.Mutex
	all []inbox.Event
	res map[string][]inbox.Result
}

func (s *seen) hear(ev inbox.Event, res inbox.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, ev)
	if s.res == nil {
		s.res = map[string][]inbox.Result{}
	}
	s.res[ev.ID] = append(s.res[ev.ID], res)
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

func (s *seen) results(id string) []inbox.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.res[id])
}

// consume runs Run with cl until stop is called; stop returns Run's error.
func consume(t *testing.T, cl *kgo.Client, p inbox.Processor) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inbox.Run(ctx, cl, p, inbox.RunConfig{RetryDelay: time.Millisecond}) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done; cl.Close() })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// publish publishes m, again while the broker answers that a new topic's
// partition has no leader yet (Apache Kafka, just after CreateTopic).
func publish(t *testing.T, pub *kafka.Publisher, m outbox.Message) {
	t.Helper()
	var err error
	testenv.Eventually(t, 20*time.Second, "publish", func() bool {
		err = pub.Publish(t.Context(), m)
		if err != nil && outbox.IsPermanent(err) {
			t.Fatal(err)
		}
		return err == nil
	})
}

func msg(t *testing.T, agg string, seq int64) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage("user", agg, "UserChanged", seq, map[string]int64{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRunProcessesEachEventOnceDespiteDuplicatesAndReordering publishes,
// through the relay's publisher, an aggregate's events with copies (a
// relay that published twice) and another's out of order, and consumes
// them with Run on each database and broker:
//
//  1. each event is processed once, in its partition's order; the copies
//     are duplicates; the gap and the regression are reported; a
//     transient failure is retried;
//  2. a consumer that lost its offsets (a crash before committing: a new
//     group, the same inbox) gets everything again and processes none;
//  3. the first group resumes after what it committed.
func TestRunProcessesEachEventOnceDespiteDuplicatesAndReordering(t *testing.T) {
	for name, brokers := range brokerTargets(t) {
		t.Run(name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b backend) { testRunOnce(t, brokers, b) })
		})
	}
}

func testRunOnce(t *testing.T, brokers []string, b backend) {
	topic := newTopic(t, brokers, 3)
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	a1, a2, a3 := msg(t, "a", 1), msg(t, "a", 2), msg(t, "a", 3)
	b1, b2, b3, b4 := msg(t, "b", 1), msg(t, "b", 2), msg(t, "b", 3), msg(t, "b", 4)
	for _, m := range []outbox.Message{a1, b1, a2, b2, a3, a2, b4, b3, b1} {
		publish(t, pub, m)
	}
	const records, events = 9, 7

	var s seen
	in := b.inbox(t, inbox.Config{Consumer: "projector", TrackSequences: true, OnProcessed: s.hear})
	var failOnce sync.Once
	transient := 0
	p := b.processor(in, func(ev inbox.Event) error {
		err := error(nil)
		failOnce.Do(func() { transient++; err = errors.New("database hiccup") })
		return err
	})

	// 1.
	stop := consume(t, consumerClient(t, brokers, "g1-"+topic, topic), p)
	testenv.Eventually(t, 30*time.Second, "every record processed", func() bool { return s.count() >= records })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ids := b.processed(t)
	if len(ids) != events {
		t.Fatalf("processed %d times, want each of the %d events once: %v", len(ids), events, ids)
	}
	for _, m := range []outbox.Message{a1, a2, a3, b1, b2, b3, b4} {
		if n := countOf(ids, m.ID.String()); n != 1 {
			t.Fatalf("%s #%d processed %d times", m.AggregateID, m.Sequence, n)
		}
	}
	if i1, i2, i3 := slices.Index(ids, a1.ID.String()), slices.Index(ids, a2.ID.String()), slices.Index(ids, a3.ID.String()); !(i1 < i2 && i2 < i3) {
		t.Fatalf("a's events processed out of order: %v", ids)
	}
	for id, want := range map[string][]inbox.Result{
		a2.ID.String(): {{Previous: 1}, {Duplicate: true}},
		b1.ID.String(): {{}, {Duplicate: true}},
		b4.ID.String(): {{Previous: 2, Gap: 1}},
		b3.ID.String(): {{Previous: 4, Regression: true}},
	} {
		if got := s.results(id); !slices.Equal(got, want) {
			t.Errorf("event %s: results %+v, want %+v", id, got, want)
		}
	}
	if transient != 1 {
		t.Fatal("the transient failure was not injected")
	}

	// 2.
	before := s.count()
	stop = consume(t, consumerClient(t, brokers, "g2-"+topic, topic), p)
	testenv.Eventually(t, 30*time.Second, "every record delivered again", func() bool { return s.count() >= before+records })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if ids := b.processed(t); len(ids) != events {
		t.Fatalf("after a redelivery of everything, processed %d times, want %d", len(ids), events)
	}
	s.mu.Lock()
	for _, ev := range s.all[before:] {
		if r := s.res[ev.ID]; !r[len(r)-1].Duplicate {
			t.Errorf("event %s was processed again", ev.ID)
		}
	}
	s.mu.Unlock()

	// 3.
	a4, b5 := msg(t, "a", 4), msg(t, "b", 5)
	before = s.count()
	stop = consume(t, consumerClient(t, brokers, "g1-"+topic, topic), p)
	for _, m := range []outbox.Message{a4, b5} {
		publish(t, pub, m)
	}
	testenv.Eventually(t, 30*time.Second, "the new events processed", func() bool {
		return len(s.results(a4.ID.String())) > 0 && len(s.results(b5.ID.String())) > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := s.count() - before; n != 2 {
		t.Fatalf("the resumed group got %d records, want only the 2 new ones (it committed the rest)", n)
	}
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// TestRunStopsAtAPermanentFailureAfterCommittingWhatCameBefore: the
// poison record is not skipped; the records before it are committed, so a
// new client of the group starts at it.
func TestRunStopsAtAPermanentFailureAfterCommittingWhatCameBefore(t *testing.T) {
	brokers := brokerTargets(t)["kfake"]
	b := sqliteBackend(t)
	topic := newTopic(t, brokers, 1)
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ms := []outbox.Message{msg(t, "a", 1), msg(t, "a", 2), msg(t, "a", 3), msg(t, "a", 4)}
	for _, m := range ms {
		publish(t, pub, m)
	}
	in := b.inbox(t, inbox.Config{Consumer: "c"})
	poison := outbox.Permanent(errors.New("cannot be processed"))
	p := b.processor(in, func(ev inbox.Event) error {
		if ev.Sequence == 3 {
			return poison
		}
		return nil
	})
	cl := consumerClient(t, brokers, "g", topic)
	defer cl.Close()
	err = inbox.Run(t.Context(), cl, p, inbox.RunConfig{})
	var pe *inbox.ProcessError
	if !errors.As(err, &pe) || pe.Offset != 2 || pe.Attempts != 1 || !errors.Is(err, poison) {
		t.Fatalf("Run = %v, want a ProcessError at offset 2 after 1 attempt, wrapping the cause", err)
	}
	if ids := b.processed(t); !slices.Equal(ids, []string{ms[0].ID.String(), ms[1].ID.String()}) {
		t.Fatalf("processed %v, want the two events before the poison one", ids)
	}
	cl.Close()
	next := consumerClient(t, brokers, "g", topic)
	defer next.Close()
	fs := next.PollRecords(t.Context(), 1)
	next.AllowRebalance() // BlockRebalanceOnPoll: Close would wait for it
	if recs := fs.Records(); len(recs) != 1 || recs[0].Offset != 2 {
		t.Fatalf("the group resumed at %v, want offset 2", recs)
	}
}

func TestRunRefusesAClientThatWouldCommitUnprocessedRecords(t *testing.T) {
	brokers := brokerTargets(t)["kfake"]
	for name, opts := range map[string][]kgo.Opt{
		"autocommit": {kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t")},
		"no group":   {kgo.ConsumeTopics("t")},
	} {
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...))...)
		if err != nil {
			t.Fatal(err)
		}
		if err := inbox.Run(t.Context(), cl, nil, inbox.RunConfig{}); !errors.Is(err, inbox.ErrClientConfig) {
			t.Errorf("%s: Run = %v, want ErrClientConfig", name, err)
		}
		cl.Close()
	}
}

// TestTheHandlerJoinsTheWritersTrace: the consumer span is a child of the
// span the writer appended under (its traceparent header), and the
// handler's context carries the consumer span.
func TestTheHandlerJoinsTheWritersTrace(t *testing.T) {
	brokers := brokerTargets(t)["kfake"]
	b := sqliteBackend(t)
	topic := newTopic(t, brokers, 1)
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	m := msg(t, "a", 1)
	m.Headers = map[string]string{"traceparent": writertest.TraceParent}
	publish(t, pub, m)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	var s seen
	in := b.inbox(t, inbox.Config{Consumer: "c", TracerProvider: tp, OnProcessed: s.hear})
	var handlerSpan trace.SpanContext
	p := in.SQLProcessor(b.db, func(ctx context.Context, _ *sql.Tx, _ *kgo.Record, _ inbox.Event, _ inbox.Result) error {
		handlerSpan = trace.SpanContextFromContext(ctx)
		return nil
	})
	stop := consume(t, consumerClient(t, brokers, "g", topic), p)
	testenv.Eventually(t, 10*time.Second, "the event processed", func() bool { return s.count() == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans, want one consumer span", len(ended))
	}
	span := ended[0]
	writer := trace.SpanContextFromContext(writertest.TraceContext(t, t.Context()))
	if span.Name() != "process "+topic || span.SpanKind() != trace.SpanKindConsumer ||
		span.Parent().TraceID() != writer.TraceID() || span.Parent().SpanID() != writer.SpanID() {
		t.Fatalf("span %q kind %v parent %v, want a consumer span child of the writer's %v", span.Name(), span.SpanKind(), span.Parent(), writer)
	}
	attrs := map[string]string{}
	for _, kv := range span.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"messaging.system": "kafka", "messaging.operation.type": "process",
		"messaging.destination.name": topic, "messaging.message.id": m.ID.String(), "messaging.kafka.offset": "0",
		"messaging.consumer.group.name": "c"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if handlerSpan.SpanID() != span.SpanContext().SpanID() {
		t.Fatal("the handler's context does not carry the consumer span")
	}
}
