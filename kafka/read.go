package kafka

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
		if o.Err != nil || o.Offset <= 0 {
			return
		}
		if want[o.Topic] == nil {
			want[o.Topic] = map[int32]kgo.Offset{}
		}
		want[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		remaining += int(o.Offset)
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
			if r.Offset >= end.Offset {
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
