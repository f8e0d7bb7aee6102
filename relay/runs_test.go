package relay_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
)

// runCounter counts the runs a relay publishes.
type runCounter struct {
	*kafka.Publisher
	calls, longest atomic.Int64
}

func (p *runCounter) PublishBatch(ctx context.Context, msgs []outbox.Message) (int, error) {
	p.count(msgs)
	return p.Publisher.PublishBatch(ctx, msgs)
}

func (p *runCounter) PublishRuns(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
	for _, msgs := range runs {
		p.count(msgs)
	}
	p.Publisher.PublishRuns(ctx, runs, results)
}

func (p *runCounter) count(msgs []outbox.Message) {
	p.calls.Add(1)
	for {
		l := p.longest.Load()
		if int64(len(msgs)) <= l || p.longest.CompareAndSwap(l, int64(len(msgs))) {
			break
		}
	}
}

// sequencesOf reads the aggregate's records from its topic, in log order.
func (r *rig) sequencesOf(aggType, agg string) []int64 {
	r.t.Helper()
	recs, err := kafkatest.ReadAll(r.t.Context(), r.brokers, []string{"outbox.event." + r.prefix + aggType})
	if err != nil {
		r.t.Fatal(err)
	}
	var seqs []int64
	for _, rec := range recs {
		if rec.Key == agg {
			s, _ := rec.Sequence()
			seqs = append(seqs, s)
		}
	}
	return seqs
}

func oneToN(seqs []int64, n int) bool {
	if len(seqs) != n {
		return false
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			return false
		}
	}
	return true
}

func TestAHotAggregatesBacklogGoesInRunsInOrder(t *testing.T) {
	rg := newRig(t, kafka.Config{})
	for i := range 2000 {
		rg.write("order", "hot", i)
		if i%10 == 0 {
			rg.write("order", fmt.Sprintf("cold-%d", i), i)
		}
	}
	pub := &runCounter{Publisher: rg.pub}
	r, err := relay.New(rg.source(), pub, rg.store, relay.Config{Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	eventually(t, 20*time.Second, "the backlog published", func() bool { return r.Stats().Published == 2200 })
	if rep := rg.check(); !rep.OK() || rep.Dup != 0 {
		t.Fatalf("%s", rep)
	}
	if !oneToN(rg.sequencesOf("order", "hot"), 2000) {
		t.Fatal("the hot aggregate's events are not 1..2000 in order")
	}
	t.Logf("%d publish calls for 2,200 events, the longest run %d", pub.calls.Load(), pub.longest.Load())
	if pub.calls.Load() > 600 || pub.longest.Load() < 10 {
		t.Fatalf("%d publish calls, the longest run %d: the hot aggregate went one event at a time", pub.calls.Load(), pub.longest.Load())
	}
}

// A message the publisher refuses for good in the middle of a hot
// aggregate's backlog: the ones before it are published, it is
// dead-lettered, and none after it is ever published (they park behind
// it), whether the refusal comes from the client (too large) or the
// broker (a policy on the topic).
func TestAPoisonMessageInARunIsNeverOvertaken(t *testing.T) {
	for _, by := range []string{"client", "broker"} {
		t.Run(by, func(t *testing.T) {
			rg := newRig(t, kafka.Config{MaxRecordBytes: 4096})
			aggType := "order"
			for i := range 60 {
				payload := any(i)
				if i == 20 && by == "client" {
					payload = strings.Repeat("x", 8192)
				}
				rg.write(aggType, "hot", payload)
			}
			if by == "broker" {
				// The broker refuses every request holding the 21st event.
				poison := 0
				rg.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.PolicyViolation, Count: -1,
					When: func(req kmsg.Request) bool {
						hit := holdsSequence(req.(*kmsg.ProduceRequest), 21)
						if hit {
							poison++
						}
						return hit
					}})
			}
			r, err := relay.New(rg.source(), rg.pub, rg.store, relay.Config{Retry: fastRetry()})
			if err != nil {
				t.Fatal(err)
			}
			serve(t, r)
			eventually(t, 20*time.Second, "20 published, the rest dead-lettered", func() bool {
				st := r.Stats()
				return st.Published == 20 && st.DeadLettered == 40
			})
			if seqs := rg.sequencesOf(aggType, "hot"); !oneToN(seqs, 20) {
				t.Fatalf("the topic holds %v, want 1..20 and nothing after the poison", seqs)
			}
			if rep := rg.check(); !rep.OK() || rep.DeadLettered != 40 {
				t.Fatalf("%s", rep)
			}
		})
	}
}

// holdsSequence reports whether a produce request carries a record whose
// sequence header is seq.
func holdsSequence(req *kmsg.ProduceRequest, seq int64) bool {
	want := []byte(fmt.Sprint(seq))
	for _, tp := range req.Topics {
		for _, p := range tp.Partitions {
			var batch kmsg.RecordBatch
			if err := batch.ReadFrom(p.Records); err != nil {
				continue
			}
			for _, rec := range batchRecords(batch) {
				for _, h := range rec.Headers {
					if h.Key == outbox.HeaderSequence && string(h.Value) == string(want) {
						return true
					}
				}
			}
		}
	}
	return false
}

// A run refused once, for good as far as the client can tell (a policy
// violation), is tried again as its first message alone: the refusal was
// not that message's, so nothing is dead-lettered and the run goes on.
func TestARunRefusedOnceIsNotADeadLetter(t *testing.T) {
	rg := newRig(t, kafka.Config{})
	// A record on the topic first, so the run's first message does not go
	// alone and the refused request is the run's first attempt.
	warm, _ := outbox.NewMessage("order", "warm", "Warm", 1, "x")
	if err := rg.pub.Publish(t.Context(), warm); err != nil {
		t.Fatal(err)
	}
	rg.rec.Record(checker.Event{Op: checker.OpCommit, ID: warm.ID.String(), Aggregate: warm.Key().String(), Sequence: 1})
	for i := range 300 {
		rg.write("order", "hot", i)
	}
	refused := 0
	rg.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.PolicyViolation, Count: -1,
		When: func(req kmsg.Request) bool {
			if refused == 0 && recordsIn(req.(*kmsg.ProduceRequest)) > 1 {
				refused++
				return true
			}
			return false
		}})
	r, err := relay.New(rg.source(), rg.pub, rg.store, relay.Config{Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	eventually(t, 20*time.Second, "all published", func() bool { return r.Stats().Published == 300 })
	if st := r.Stats(); st.DeadLettered != 0 || refused != 1 {
		t.Fatalf("stats %+v, %d requests refused: want no dead letter after one refused run", st, refused)
	}
	if rep := rg.check(); !rep.OK() || rep.Dup != 0 {
		t.Fatalf("%s", rep)
	}
}

func recordsIn(req *kmsg.ProduceRequest) int {
	n := 0
	for _, tp := range req.Topics {
		for _, p := range tp.Partitions {
			var batch kmsg.RecordBatch
			if batch.ReadFrom(p.Records) == nil {
				n += int(batch.NumRecords)
			}
		}
	}
	return n
}

// batchRecords decodes a produce request's record batch.
func batchRecords(b kmsg.RecordBatch) []kmsg.Record {
	raw := b.Records
	if codec := kgo.CompressionCodecType(b.Attributes & 0x07); codec != kgo.CodecNone {
		var err error
		if raw, err = kgo.DefaultDecompressor().Decompress(raw, codec); err != nil {
			return nil
		}
	}
	var out []kmsg.Record
	for range b.NumRecords {
		length, n := binary.Varint(raw)
		if n <= 0 || n+int(length) > len(raw) {
			break
		}
		var r kmsg.Record
		if err := r.ReadFrom(raw[:n+int(length)]); err != nil {
			break
		}
		out = append(out, r)
		raw = raw[n+int(length):]
	}
	return out
}
