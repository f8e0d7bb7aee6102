package kafka

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/outbox"
)

// Record builds the Kafka record for m: key = aggregate id, headers carry
// the event's identity and order.
func Record(m outbox.Message, topic string) *kgo.Record {
	headers := []kgo.RecordHeader{
		{Key: outbox.HeaderID, Value: []byte(m.ID.String())},
		{Key: outbox.HeaderType, Value: []byte(m.Type)},
		{Key: outbox.HeaderAggregateType, Value: []byte(m.AggregateType)},
		{Key: outbox.HeaderAggregateID, Value: []byte(m.AggregateID)},
		{Key: outbox.HeaderSequence, Value: []byte(strconv.FormatInt(m.Sequence, 10))},
	}
	if tp := m.Headers[outbox.HeaderTraceParent]; tp != "" {
		headers = append(headers, kgo.RecordHeader{Key: outbox.HeaderTraceParent, Value: []byte(tp)})
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(m.AggregateID),
		Value:     m.Payload,
		Headers:   headers,
		Timestamp: m.Timestamp,
	}
}
