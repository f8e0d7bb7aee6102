package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// holdSecond partitions as the publisher does, but holds a run's second
// record until the first is finished (here: refused), or for a while. The
// client places the records of a topic it has just learned one at a time;
// this is the moment between two of them.
type holdSecond struct {
	first chan struct{} // closed once the run's first record is finished
	once  *sync.Once
}

func isSequence(r *kgo.Record, seq string) bool {
	for _, hd := range r.Headers {
		if hd.Key == outbox.HeaderSequence {
			return string(hd.Value) == seq
		}
	}
	return false
}

func (h holdSecond) OnProduceRecordUnbuffered(r *kgo.Record, _ error) {
	if isSequence(r, "1") {
		h.once.Do(func() { close(h.first) })
	}
}

func (h holdSecond) ForTopic(topic string) kgo.TopicPartitioner {
	return heldTopic{TopicPartitioner: kgo.StickyKeyPartitioner(nil).ForTopic(topic), first: h.first}
}

type heldTopic struct {
	kgo.TopicPartitioner
	first chan struct{}
}

func (h heldTopic) Partition(r *kgo.Record, n int) int {
	if isSequence(r, "2") {
		select {
		case <-h.first:
		case <-time.After(200 * time.Millisecond):
		}
	}
	return h.TopicPartitioner.Partition(r, n)
}

// A run goes to a client that has not loaded its topic's partitions yet.
// The client places its records as the metadata comes, one by one, and
// must not send the first before the others are placed: a produce request
// holding only the start of the run, refused, would leave the rest to go
// in a later request and be appended ahead of it.
func TestARunIsOneRequestWhileTheClientLearnsItsTopic(t *testing.T) {
	e := embedded(t)
	hold := holdSecond{first: make(chan struct{}), once: new(sync.Once)}
	p := publisher(t, e.Addrs(), kafka.Config{RecordRetries: kafka.NoRecordRetries,
		Opts: []kgo.Opt{kgo.RecordPartitioner(hold), kgo.WithHooks(hold)}})
	aggType := "learning"
	topic := "outbox.event." + aggType
	// The topic in use, so the run goes whole to the run client, which has
	// not asked for its partitions yet.
	if err := p.Publish(ctx(t), msg(t, aggType, "a", "Warm", 0, "x")); err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.PolicyViolation, Count: -1,
		When: func(kmsg.Request) bool {
			if requests.Add(1) == 1 {
				return true // the first request of the run is refused
			}
			return false
		}})
	ms := aggregateRun(t, aggType, "a", 100, func(i int) string { return fmt.Sprint(i) })
	n, err := p.PublishBatch(ctx(t), ms)
	got := inTopic(t, e.Addrs(), topic, "a")[1:] // past the warm-up record
	t.Logf("%d acknowledged (%v); %d produce requests; the log holds %d of the run", n, err, requests.Load(), len(got))
	if n != 0 || !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("PublishBatch = %d, %v; want 0 and the refusal", n, err)
	}
	if len(got) != 0 {
		t.Fatalf("the log holds %v of a run whose first request was refused", got[:min(len(got), 10)])
	}
}

// holdLastUntilFlush holds the client's placing of a run's last record
// until a flush has begun: the moment after the flusher has seen every
// record placed and before the client has made the topic's partitions
// visible to a flush.
type holdLastUntilFlush struct {
	last    string
	flushed chan struct{}
	once    *sync.Once
	held    *atomic.Bool // a flush began while the last record was held
}

func (h holdLastUntilFlush) OnProduceRecordPartitioned(r *kgo.Record, _ int32) {
	if isSequence(r, h.last) {
		select {
		case <-h.flushed:
			h.held.Store(true)
		case <-time.After(time.Second):
		}
	}
}

func (h holdLastUntilFlush) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (h holdLastUntilFlush) Log(_ kgo.LogLevel, msg string, _ ...any) {
	if msg == "flushing" {
		h.once.Do(func() { close(h.flushed) })
	}
}

// The client places the records of a topic it has just learned before it
// lets a flush see the topic's partitions. A flush begun in between must
// not wait for ever on records it never sends.
func TestARunPlacedAsTheClientLearnsItsTopicIsSent(t *testing.T) {
	e := embedded(t)
	hold := holdLastUntilFlush{last: "100", flushed: make(chan struct{}), once: new(sync.Once), held: new(atomic.Bool)}
	p := publisher(t, e.Addrs(), kafka.Config{RecordRetries: kafka.NoRecordRetries,
		Opts: []kgo.Opt{kgo.WithHooks(hold), kgo.WithLogger(hold)}})
	aggType := "learning"
	if err := p.Publish(ctx(t), msg(t, aggType, "a", "Warm", 0, "x")); err != nil {
		t.Fatal(err)
	}
	ms := aggregateRun(t, aggType, "a", 100, func(i int) string { return fmt.Sprint(i) })
	c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if n, err := p.PublishBatch(c, ms); n != len(ms) || err != nil {
		t.Fatalf("PublishBatch = %d, %v; want all %d", n, err, len(ms))
	}
	wantPrefix(t, inTopic(t, e.Addrs(), "outbox.event."+aggType, "a")[1:], len(ms))
	if !hold.held.Load() {
		t.Fatal("no flush began while the run's last record was being placed: the case was not tested")
	}
}
