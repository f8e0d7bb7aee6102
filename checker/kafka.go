package checker

import (
	"fmt"

	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
)

// FromKafka turns records read from the topics into checker input: the
// id header links a record to its committed event, and everything else
// the record says (key, headers, payload) is kept to be compared with it.
func FromKafka(recs []kafkatest.Received) ([]Observed, error) {
	out := make([]Observed, 0, len(recs))
	for _, r := range recs {
		id, err := r.EventID()
		if err != nil {
			return nil, fmt.Errorf("checker: %s/%d@%d: id header: %w", r.Topic, r.Partition, r.Offset, err)
		}
		seq, err := r.Sequence()
		if err != nil {
			return nil, fmt.Errorf("checker: %s/%d@%d: sequence header: %w", r.Topic, r.Partition, r.Offset, err)
		}
		agg := outbox.AggregateKey{Type: r.Headers[outbox.HeaderAggregateType], ID: r.Headers[outbox.HeaderAggregateID]}
		out = append(out, Observed{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, ID: id.String(), Wire: true,
			Key: string(r.Key), Aggregate: agg.String(), Sequence: seq, Type: r.Headers[outbox.HeaderType], Payload: Digest(r.Value)})
	}
	return out, nil
}
