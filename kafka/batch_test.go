package kafka_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
)

func aggregateRun(t *testing.T, aggType, agg string, n int, payload func(i int) string) []outbox.Message {
	ms := make([]outbox.Message, n)
	for i := range ms {
		ms[i] = msg(t, aggType, agg, "Changed", int64(i+1), payload(i))
	}
	return ms
}

// inTopic returns the sequences of agg's records in topic, in log order.
func inTopic(t *testing.T, brokers []string, topic, agg string) []int64 {
	t.Helper()
	recs, err := kafkatest.ReadAll(ctx(t), brokers, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	partition := int32(-1)
	for _, r := range recs {
		if r.Key != agg {
			continue
		}
		if partition >= 0 && r.Partition != partition {
			t.Fatalf("%s's records in partitions %d and %d", agg, partition, r.Partition)
		}
		partition = r.Partition
		seq, _ := r.Sequence()
		seqs = append(seqs, seq)
	}
	return seqs
}

func wantPrefix(t *testing.T, got []int64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("the log holds %v, want the first %d of the run, in order", got, n)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("the log holds %v, want 1..%d in order", got, n)
		}
	}
}

func TestPublishBatchAcknowledgesTheRunInOrder(t *testing.T) {
	for name, brokers := range brokerTargets(t) {
		t.Run(name, func(t *testing.T) {
			p := publisher(t, brokers, kafka.Config{})
			aggType := fmt.Sprintf("run%d", time.Now().UnixNano())
			// Twice past a flush's size: several runs, each one batch.
			ms := aggregateRun(t, aggType, "a", 600, func(i int) string { return fmt.Sprint(i) + strings.Repeat("x", 3000) })
			n, err := p.PublishBatch(ctx(t), ms)
			if err != nil || n != len(ms) {
				t.Fatalf("PublishBatch = %d, %v; want %d, nil", n, err, len(ms))
			}
			wantPrefix(t, inTopic(t, brokers, "outbox.event."+aggType, "a"), len(ms))
		})
	}
}

// A record the client refuses before buffering it (too large) does not
// fail the records after it, so they must not be sent with it.
func TestPublishBatchNeverSendsPastARecordTooLarge(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{MaxRecordBytes: 8192, RecordRetries: kafka.NoRecordRetries})
	ms := aggregateRun(t, "big", "a", 10, func(i int) string {
		if i == 4 {
			return strings.Repeat("x", 9000)
		}
		return "small"
	})
	n, err := p.PublishBatch(ctx(t), ms)
	if n != 4 || !outbox.IsPermanent(err) || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("PublishBatch = %d, %v; want 4 and a permanent MESSAGE_TOO_LARGE", n, err)
	}
	wantPrefix(t, inTopic(t, e.Addrs(), "outbox.event.big", "a"), 4)
}

// The broker refusing a produce fails the records after it in the
// partition too: what is acknowledged is a prefix, what is in the log is
// that prefix, and sending the rest again completes the run with no copy.
// Each case starts on a partition this producer never wrote to, where the
// broker would take a later pipelined request even though an earlier one
// was refused.
func TestPublishBatchARefusedProduceLeavesAPrefix(t *testing.T) {
	e := embedded(t)
	for _, refuse := range []int{1, 2, 3, 4, 5} { // the n-th produce request of the run
		t.Run(fmt.Sprint(refuse), func(t *testing.T) {
			p := publisher(t, e.Addrs(), kafka.Config{RecordRetries: kafka.NoRecordRetries})
			aggType := fmt.Sprintf("refused%d", refuse)
			topic := "outbox.event." + aggType
			other := publisher(t, e.Addrs(), kafka.Config{})
			if err := other.Publish(ctx(t), msg(t, aggType, "a", "Warm", 0, "x")); err != nil { // the topic and partition exist
				t.Fatal(err)
			}
			// 1.2 MB: the run takes several produce requests.
			ms := aggregateRun(t, aggType, "a", 300, func(i int) string { return fmt.Sprint(i) + strings.Repeat("x", 4000) })
			seen := 0
			h := e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.CorruptMessage, Count: -1,
				When: func(kmsg.Request) bool { seen++; return seen == refuse }})
			n, err := p.PublishBatch(ctx(t), ms)
			h.Remove()
			t.Logf("request %d of %d refused: %d acknowledged, %v", refuse, seen, n, err)
			got := inTopic(t, e.Addrs(), topic, "a")[1:] // past the warm-up record
			wantPrefix(t, got, n)
			if n == len(ms) {
				return // the run took fewer requests
			}
			if !errors.Is(err, kerr.CorruptMessage) {
				t.Fatalf("%d of %d acknowledged; error %v, want CORRUPT_MESSAGE", n, len(ms), err)
			}
			m, err := p.PublishBatch(ctx(t), ms[n:])
			if err != nil || n+m != len(ms) {
				t.Fatalf("sending the rest again: %d, %v", m, err)
			}
			wantPrefix(t, inTopic(t, e.Addrs(), topic, "a")[1:], len(ms))
		})
	}
}

// PublishRuns answers for each run on its own: runs of one message for a
// topic in use, a run of several, the first message for a new topic, one
// too large and one for a refused topic, in one call.
func TestPublishRunsAnswersEachRunOnItsOwn(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{MaxRecordBytes: 4096, RecordRetries: kafka.NoRecordRetries})
	aggType := fmt.Sprintf("runs%d", time.Now().UnixNano())
	refused := aggType + "refused"
	// The topics in use: acknowledged once; then one refuses everything.
	for _, typ := range []string{aggType, refused} {
		if err := p.Publish(ctx(t), msg(t, typ, "warm", "Changed", 1, "w")); err != nil {
			t.Fatal(err)
		}
	}
	e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event." + refused, Err: kerr.PolicyViolation, Count: -1})
	var runs [][]outbox.Message
	for i := range 20 {
		runs = append(runs, []outbox.Message{msg(t, aggType, fmt.Sprintf("single-%d", i), "Changed", 1, i)})
	}
	runs = append(runs,
		aggregateRun(t, aggType, "several", 5, func(i int) string { return fmt.Sprint(i) }),
		[]outbox.Message{msg(t, aggType+"new", "first", "Changed", 1, "x")},
		[]outbox.Message{msg(t, aggType, "big", "Changed", 1, strings.Repeat("x", 8192))},
		[]outbox.Message{msg(t, refused, "no", "Changed", 1, "x")},
	)
	results := make([]outbox.RunResult, len(runs))
	p.PublishRuns(ctx(t), runs, results)
	for i, res := range results[:21] {
		if res.Err != nil || res.Acked != len(runs[i]) {
			t.Fatalf("run %d (%s): %+v, want all %d acknowledged", i, runs[i][0].AggregateID, res, len(runs[i]))
		}
	}
	if res := results[21]; res.Err != nil || res.Acked != 1 {
		t.Fatalf("the first message for a new topic: %+v, want acknowledged", res)
	}
	for i, name := range map[int]string{22: "too large", 23: "refused"} {
		if res := results[i]; res.Acked != 0 || !outbox.IsPermanent(res.Err) {
			t.Fatalf("%s: %+v, want a permanent error and nothing acknowledged", name, res)
		}
	}
	wantPrefix(t, inTopic(t, e.Addrs(), "outbox.event."+aggType, "several"), 5)
	if got := inTopic(t, e.Addrs(), "outbox.event."+aggType, "single-7"); len(got) != 1 {
		t.Fatalf("single-7 in the log %d times, want once", len(got))
	}
}

// More records than the client buffers: PublishRuns hands them over as
// the buffer empties, instead of blocking with the publisher's lock held,
// which the records' own settling needs.
func TestPublishRunsWithMoreRecordsThanTheClientBuffers(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{Opts: []kgo.Opt{kgo.MaxBufferedRecords(4)}})
	aggType := fmt.Sprintf("buffered%d", time.Now().UnixNano())
	if err := p.Publish(ctx(t), msg(t, aggType, "warm", "Changed", 1, "w")); err != nil {
		t.Fatal(err)
	}
	var runs [][]outbox.Message
	for i := range 20 {
		runs = append(runs, []outbox.Message{msg(t, aggType, fmt.Sprintf("a%d", i), "Changed", 1, i)})
	}
	results := make([]outbox.RunResult, len(runs))
	done := make(chan struct{})
	go func() { defer close(done); p.PublishRuns(ctx(t), runs, results) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("PublishRuns blocked with 20 records for a client that buffers 4")
	}
	for i, res := range results {
		if res.Err != nil || res.Acked != 1 {
			t.Fatalf("run %d: %+v, want acknowledged", i, res)
		}
	}
}

// A record slow to be acknowledged does not hold the other runs' answers:
// PublishRuns answers them once they are settled (and a short wait more),
// the slow one with outbox.ErrInFlight, and publishing it again waits for
// the record already sent: it is in the log once.
func TestPublishRunsDoesNotWaitForAStraggler(t *testing.T) {
	topic := "outbox.event.straggle"
	c, err := kafkatest.NewSlowBroker(topic, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	p := publisher(t, c.ListenAddrs(), kafka.Config{})
	if err := p.Publish(ctx(t), msg(t, "straggle", "warm", "Changed", 1, "w")); err != nil {
		t.Fatal(err)
	}
	c.Hold()
	var runs [][]outbox.Message
	for i := range 40 {
		runs = append(runs, []outbox.Message{msg(t, "straggle", fmt.Sprintf("a%d", i), "Changed", 1, i)})
	}
	results := make([]outbox.RunResult, len(runs))
	p.PublishRuns(ctx(t), runs, results)
	var late []outbox.Message
	for i, res := range results {
		switch {
		case res.Acked == 1 && res.Err == nil:
		case res.Acked == 0 && errors.Is(res.Err, outbox.ErrInFlight):
			late = append(late, runs[i][0])
		default:
			t.Fatalf("run %d: %+v, want acknowledged, or still in flight on the slow broker", i, res)
		}
	}
	if len(late) == 0 || len(late) == len(runs) {
		t.Fatalf("%d of %d runs still in flight: want those on the slow broker only", len(late), len(runs))
	}
	c.Release()
	// Delivered while no attempt waits: the publisher remembers them, so
	// publishing them again adds nothing.
	inLog := func() map[string]int {
		recs, err := kafkatest.ReadAll(ctx(t), c.ListenAddrs(), []string{topic})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, r := range recs {
			seen[r.Key]++
		}
		return seen
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		seen := inLog()
		all := true
		for _, m := range late {
			all = all && seen[m.AggregateID] == 1
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the records held by the slow broker never reached the log")
		}
		<-time.After(20 * time.Millisecond)
	}
	for _, m := range late {
		if err := p.Publish(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	seen := inLog()
	for _, run := range runs {
		if n := seen[run[0].AggregateID]; n != 1 {
			t.Errorf("%s is in the log %d times, want once", run[0].AggregateID, n)
		}
	}
}
