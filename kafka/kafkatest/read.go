// Package kafkatest reads topics back and injects faults into the
// in-process broker, for tests and the lab (the checker, the demo, the
// fault matrix). The relay does not import it.
package kafkatest

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/outbox"
)

// Received is one record as a consumer saw it.
type Received struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       string
	Headers   map[string]string
	Value     []byte
}

// EventID parses the record's id header.
func (r Received) EventID() (uuid.UUID, error) { return uuid.Parse(r.Headers[outbox.HeaderID]) }

// Sequence parses the record's sequence header.
func (r Received) Sequence() (int64, error) {
	return strconv.ParseInt(r.Headers[outbox.HeaderSequence], 10, 64)
}

// ReadAll reads every record of topics from offset 0 to the end offsets of
// the moment it starts, in partition order. Missing topics read as empty.
func ReadAll(ctx context.Context, brokers []string, topics []string, opts ...kgo.Opt) ([]Received, error) {
	return read(ctx, brokers, topics, nil, opts)
}

// Offsets are positions in partitions, by topic.
type Offsets map[string]map[int32]int64

// EndOffsets marks where every topic on the brokers ends now (internal
// topics aside), for ReadFrom to read what comes after.
func EndOffsets(ctx context.Context, brokers []string, opts ...kgo.Opt) (Offsets, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: end offsets: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w", err)
	}
	out := Offsets{}
	if len(topics.Names()) == 0 {
		return out, nil
	}
	ends, err := adm.ListEndOffsets(ctx, topics.Names()...)
	if err != nil {
		return nil, fmt.Errorf("kafka: list end offsets: %w", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			if out[o.Topic] == nil {
				out[o.Topic] = map[int32]int64{}
			}
			out[o.Topic][o.Partition] = o.Offset
		}
	})
	return out, nil
}

// ReadFrom reads every record of every topic on the brokers (internal
// topics aside) from the offsets in from (a topic or partition not in it
// from its start) to the end offsets of the moment it starts: everything
// published since from was taken, wherever it went.
func ReadFrom(ctx context.Context, brokers []string, from Offsets, opts ...kgo.Opt) ([]Received, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: read: %w", err)
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	cl.Close()
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w", err)
	}
	return read(ctx, brokers, topics.Names(), from, opts)
}

func read(ctx context.Context, brokers []string, topics []string, from Offsets, opts []kgo.Opt) ([]Received, error) {
	if len(topics) == 0 {
		return nil, nil
	}
	admin, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: read: %w", err)
	}
	defer admin.Close()
	ends, err := kadm.NewClient(admin).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka: list end offsets: %w", err)
	}
	want := map[string]map[int32]kgo.Offset{}
	remaining := 0
	ends.Each(func(o kadm.ListedOffset) {
		start := from[o.Topic][o.Partition]
		if o.Err != nil || o.Offset <= start {
			return
		}
		if want[o.Topic] == nil {
			want[o.Topic] = map[int32]kgo.Offset{}
		}
		want[o.Topic][o.Partition] = kgo.NewOffset().At(start)
		remaining += int(o.Offset - start)
	})
	if remaining == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(want)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: read: %w", err)
	}
	defer cl.Close()
	var out []Received
	for remaining > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("kafka: read: %d records short: %w", remaining, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("kafka: read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, _ := ends.Lookup(r.Topic, r.Partition)
			if r.Offset >= end.Offset || r.Offset < from[r.Topic][r.Partition] {
				return
			}
			remaining--
			h := make(map[string]string, len(r.Headers))
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			out = append(out, Received{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Headers: h, Value: r.Value})
		})
	}
	return out, nil
}
