package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
)

func embedded(t *testing.T) *kafka.Embedded {
	t.Helper()
	e, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func publisher(t *testing.T, brokers []string, cfg kafka.Config) *kafka.Publisher {
	t.Helper()
	cfg.Brokers = brokers
	p, err := kafka.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func msg(t *testing.T, aggType, agg, typ string, seq int64, payload any) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage(aggType, agg, typ, seq, payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRouterTemplates(t *testing.T) {
	m := outbox.Message{ID: [16]byte{1}, AggregateType: "order", Type: "OrderCreated"}
	for _, tc := range []struct {
		template, want, err string
	}{
		{kafka.TopicPerEventType, "OrderCreated", ""},
		{kafka.TopicPerAggregateType, "outbox.event.order", ""},
		{"fixed-topic", "fixed-topic", ""},
		{"{aggregatetype}.{type}", "order.OrderCreated", ""},
		{"", "", "empty"},
		{"events.{aggregateid}", "", "unknown variable {aggregateid}"},
		{"events.{typ", "", "unclosed"},
		{"events}", "", "unmatched"},
		{"bad topic/{type}", "", "characters"},
	} {
		t.Run(tc.template, func(t *testing.T) {
			r, err := kafka.NewRouter(tc.template)
			if tc.err != "" {
				if !errors.Is(err, kafka.ErrInvalidTemplate) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "TopicTemplate") {
					t.Fatalf("NewRouter(%q) = %v, want an error naming TopicTemplate and %q", tc.template, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := r.Topic(m); err != nil || got != tc.want {
				t.Fatalf("Topic = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	r, _ := kafka.NewRouter(kafka.TopicPerEventType)
	_, err := r.Topic(outbox.Message{Type: "bad type!"})
	if !errors.Is(err, kafka.ErrUnroutable) || !outbox.IsPermanent(err) {
		t.Fatalf("illegal routed topic: %v, want a permanent ErrUnroutable", err)
	}
}

// brokerTargets are the brokers the publisher is tested against: the
// embedded one always, Apache Kafka when the environment provides it.
func brokerTargets(t *testing.T) map[string][]string {
	targets := map[string][]string{"kfake": embedded(t).Addrs()}
	t.Run("apache-kafka-available", func(t *testing.T) { targets["apache-kafka"] = testenv.KafkaBrokers(t) })
	return targets
}

func TestPublishKeyHeadersAndRouting(t *testing.T) {
	for name, brokers := range brokerTargets(t) {
		t.Run(name, func(t *testing.T) { testPublishKeyHeadersAndRouting(t, brokers) })
	}
}

func testPublishKeyHeadersAndRouting(t *testing.T, brokers []string) {
	run := fmt.Sprint(time.Now().UnixNano())
	for _, template := range []string{kafka.TopicPerEventType, kafka.TopicPerAggregateType} {
		t.Run(template, func(t *testing.T) {
			template := "t" + run + "." + template // topics of this run's own
			p := publisher(t, brokers, kafka.Config{TopicTemplate: template})
			agg := "order-" + strings.ReplaceAll(template, "{", "")
			ms := []outbox.Message{
				msg(t, "order", agg, "OrderCreated", 1, map[string]int{"v": 1}),
				msg(t, "order", agg, "OrderUpdated", 2, map[string]int{"v": 2}),
				msg(t, "order", agg, "OrderCancelled", 3, map[string]int{"v": 3}),
			}
			ms[0].Headers = map[string]string{outbox.HeaderTraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			topics := map[string]bool{}
			for _, m := range ms {
				if err := p.Publish(ctx(t), m); err != nil {
					t.Fatal(err)
				}
				r, _ := kafka.NewRouter(template)
				topic, _ := r.Topic(m)
				topics[topic] = true
			}
			var names []string
			for n := range topics {
				names = append(names, n)
			}
			recs, err := kafkatest.ReadAll(ctx(t), brokers, names)
			if err != nil {
				t.Fatal(err)
			}
			var mine []kafkatest.Received
			for _, r := range recs {
				if r.Key == agg {
					mine = append(mine, r)
				}
			}
			if len(mine) != 3 {
				t.Fatalf("found %d records keyed %s, want 3", len(mine), agg)
			}
			for _, r := range mine {
				id, _ := r.EventID()
				var m outbox.Message
				for _, c := range ms {
					if c.ID == id {
						m = c
					}
				}
				seq, _ := r.Sequence()
				if m.ID != id || r.Headers["type"] != m.Type || r.Headers["aggregatetype"] != "order" ||
					r.Headers["aggregateid"] != agg || seq != m.Sequence || string(r.Value) != string(m.Payload) {
					t.Fatalf("record %+v does not carry message %+v", r, m)
				}
				if want := m.Headers[outbox.HeaderTraceParent]; r.Headers["traceparent"] != want {
					t.Fatalf("traceparent %q, want %q", r.Headers["traceparent"], want)
				}
			}
			if strings.HasSuffix(template, kafka.TopicPerAggregateType) {
				if len(topics) != 1 || mine[0].Partition != mine[2].Partition {
					t.Fatal("one topic per aggregate type must keep an aggregate in one partition")
				}
				for i := 1; i < 3; i++ {
					if mine[i].Offset <= mine[i-1].Offset {
						t.Fatal("aggregate's records out of order in its partition")
					}
				}
			}
		})
	}
}

func TestPermanentAndTransientBrokerAnswers(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{TopicTemplate: kafka.TopicPerAggregateType, MaxRecordBytes: 4096, RecordRetries: kafka.NoRecordRetries})
	if err := p.Publish(ctx(t), msg(t, "order", "warm", "X", 1, "x")); err != nil {
		t.Fatal(err)
	}
	big := msg(t, "order", "big", "X", 1, strings.Repeat("x", 8192))
	if err := p.Publish(ctx(t), big); !outbox.IsPermanent(err) || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("too large: %v, want permanent MESSAGE_TOO_LARGE", err)
	}
	if err := p.Publish(ctx(t), msg(t, "bad type!", "a", "X", 1, "x")); !outbox.IsPermanent(err) || !errors.Is(err, kafka.ErrUnroutable) {
		t.Fatalf("unroutable: %v, want permanent", err)
	}
	h := e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	// Refused authorization would fail every record alike: back-pressure,
	// never a dead letter.
	if err := p.Publish(ctx(t), msg(t, "secret", "a", "X", 1, "x")); outbox.IsPermanent(err) || !errors.Is(err, kafka.ErrAuthorization) {
		t.Fatalf("authorization failure: %v, want transient ErrAuthorization", err)
	}
	h.Remove()
	e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.UnknownServerError})
	err := p.Publish(ctx(t), msg(t, "order", "a", "X", 1, "x"))
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("unknown server error: %v, want transient", err)
	}
	if err := p.Publish(ctx(t), msg(t, "order", "a", "X", 2, "x")); err != nil {
		t.Fatalf("publisher did not recover after a transient error: %v", err)
	}
}

func TestEmbeddedBrokerServesAnyClient(t *testing.T) {
	e := embedded(t)
	if !strings.HasPrefix(e.Addrs()[0], "127.0.0.1:") {
		t.Fatalf("embedded broker listens on %v, want loopback", e.Addrs())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx(t), &kgo.Record{Topic: "plain", Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	recs, err := kafkatest.ReadAll(ctx(t), e.Addrs(), []string{"plain", "missing"})
	if err != nil || len(recs) != 1 || string(recs[0].Value) != "hello" {
		t.Fatalf("read back %+v %v", recs, err)
	}
	if e.Close() != nil || e.Close() != nil {
		t.Fatal("Close is not idempotent")
	}
}

func TestPublisherConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   kafka.Config
		field string
	}{
		{"no brokers", kafka.Config{}, "Brokers"},
		{"unknown variable", kafka.Config{Brokers: []string{"x:1"}, TopicTemplate: "{nope}"}, "TopicTemplate"},
		{"negative linger", kafka.Config{Brokers: []string{"x:1"}, Linger: -1}, "Linger"},
		{"negative retries", kafka.Config{Brokers: []string{"x:1"}, RecordRetries: -2}, "RecordRetries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kafka.NewPublisher(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("NewPublisher: %v, want an error naming %s", err, tc.field)
			}
		})
	}
	if _, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Port: 70000}); err == nil {
		t.Fatal("embedded broker accepted port 70000")
	}
}

func TestTheDefaultRoutingKeepsAnAggregateInOnePartition(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{}) // no TopicTemplate
	for i, typ := range []string{"OrderCreated", "OrderUpdated", "OrderCancelled"} {
		if err := p.Publish(ctx(t), msg(t, "order", "o-1", typ, int64(i+1), "x")); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := kafkatest.ReadAll(ctx(t), e.Addrs(), []string{"outbox.event.order"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("outbox.event.order holds %d records, want all 3 of the aggregate's events", len(recs))
	}
	for i, r := range recs {
		if seq, _ := r.Sequence(); seq != int64(i+1) || r.Partition != recs[0].Partition {
			t.Fatalf("record %d: sequence %d in partition %d, want %d in one partition", i, seq, r.Partition, i+1)
		}
	}
}
