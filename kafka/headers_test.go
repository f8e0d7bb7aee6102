package kafka_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// callerHeaders are what a writer may set: trace context, baggage, its
// own, and forgeries of every reserved header.
var callerHeaders = map[string]string{
	"traceparent":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"tracestate":    "vendor=opaque",
	"baggage":       "tenant=acme,region=eu",
	"tenant":        "acme",
	"empty":         "",
	"id":            "forged-id",
	"type":          "Forged",
	"aggregatetype": "forged",
	"aggregateid":   "forged",
	"sequence":      "999",
}

// wantHeaders is the exact header list Record must produce for m with
// callerHeaders: reserved first, from the message, then the caller's but
// the reserved, by name.
func wantHeaders(m outbox.Message) []kgo.RecordHeader {
	return []kgo.RecordHeader{
		{Key: "id", Value: []byte(m.ID.String())},
		{Key: "type", Value: []byte(m.Type)},
		{Key: "aggregatetype", Value: []byte(m.AggregateType)},
		{Key: "aggregateid", Value: []byte(m.AggregateID)},
		{Key: "sequence", Value: []byte(fmt.Sprint(m.Sequence))},
		{Key: "baggage", Value: []byte("tenant=acme,region=eu")},
		{Key: "empty", Value: []byte{}},
		{Key: "tenant", Value: []byte("acme")},
		{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		{Key: "tracestate", Value: []byte("vendor=opaque")},
	}
}

func sameHeaders(a, b []kgo.RecordHeader) bool {
	return slices.EqualFunc(a, b, func(x, y kgo.RecordHeader) bool {
		return x.Key == y.Key && string(x.Value) == string(y.Value)
	})
}

func TestRecordCarriesEveryHeaderAndKeepsTheReservedOnes(t *testing.T) {
	m := msg(t, "user", "u-1", "UserSignedUp", 7, map[string]string{"email": "a@example.com"})
	m.Headers = callerHeaders
	if got := kafka.Record(m, "t").Headers; !sameHeaders(got, wantHeaders(m)) {
		t.Fatalf("headers\n got %q\nwant %q", got, wantHeaders(m))
	}
	one := m
	one.Headers = map[string]string{"sequence": "999"}
	if got := kafka.Record(one, "t").Headers; len(got) != 5 || string(got[4].Value) != "7" {
		t.Fatalf("a lone reserved header reached the record: %q", got)
	}
	for _, k := range []string{"id", "type", "aggregatetype", "aggregateid", "sequence"} {
		if !kafka.ReservedHeader(k) {
			t.Errorf("%s is not reserved", k)
		}
	}
	if kafka.ReservedHeader("traceparent") {
		t.Error("traceparent must pass through")
	}
}

// TestEveryHeaderReachesTheBroker publishes messages with the caller's
// headers one at a time and as a run, and reads the records back raw (a
// map would hide a duplicated header) from kfake and Apache Kafka.
func TestEveryHeaderReachesTheBroker(t *testing.T) {
	for name, brokers := range brokerTargets(t) {
		t.Run(name, func(t *testing.T) {
			topic := fmt.Sprintf("headers.%d", time.Now().UnixNano())
			p := publisher(t, brokers, kafka.Config{TopicTemplate: topic})
			var ms []outbox.Message
			for i := range 4 {
				m := msg(t, "user", "u-1", "UserChanged", int64(i+1), map[string]int{"i": i})
				m.Headers = callerHeaders
				ms = append(ms, m)
			}
			if err := p.Publish(ctx(t), ms[0]); err != nil {
				t.Fatal(err)
			}
			if n, err := p.PublishBatch(ctx(t), ms[1:]); n != 3 || err != nil {
				t.Fatalf("PublishBatch = %d, %v", n, err)
			}
			recs := readRaw(t, brokers, topic, len(ms))
			for i, r := range recs {
				if !sameHeaders(r.Headers, wantHeaders(ms[i])) {
					t.Fatalf("record %d headers\n got %q\nwant %q", i, r.Headers, wantHeaders(ms[i]))
				}
			}
		})
	}
}

// readRaw reads n records of topic from its start, as the client got them.
func readRaw(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := ctx(t)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(c)
		if c.Err() != nil {
			t.Fatalf("read %d of %d records from %s: %v", len(out), n, topic, c.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	slices.SortFunc(out, func(a, b *kgo.Record) int { return int(a.Offset - b.Offset) })
	return out
}

// A record's header values are separate slices of one buffer (the key is
// the aggregate id's): each is exactly its value, and growing one cannot
// write into another.
func TestRecordValuesDoNotOverlap(t *testing.T) {
	m := msg(t, "user", "u-1", "UserSignedUp", 7, map[string]string{"email": "a@example.com"})
	m.Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	rec := kafka.Record(m, "t")
	want := wantHeaders(m)
	want = append(want[:5], kgo.RecordHeader{Key: "traceparent", Value: []byte(m.Headers["traceparent"])})
	if !sameHeaders(rec.Headers, want) || string(rec.Key) != m.AggregateID || rec.Topic != "t" || string(rec.Value) != string(m.Payload) {
		t.Fatalf("record %+v", rec)
	}
	for i := range rec.Headers {
		rec.Headers[i].Value = append(rec.Headers[i].Value, '!')
	}
	for i, h := range rec.Headers {
		if string(h.Value) != string(want[i].Value)+"!" {
			t.Fatalf("header %s is %q after every value grew by one byte: want %q", h.Key, h.Value, string(want[i].Value)+"!")
		}
	}
}

// Record is on the relay's path once per event: it allocates the record
// and one buffer, whatever it carries, when the message has at most one
// header of its own.
func TestRecordAllocatesTwice(t *testing.T) {
	m := msg(t, "user", "u-1", "UserSignedUp", 7, map[string]string{"email": "a@example.com"})
	m.Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if n := testing.AllocsPerRun(100, func() { kafka.Record(m, "t") }); n > 2 {
		t.Fatalf("Record allocates %.0f times, want 2", n)
	}
}
