package kafka

import (
	"maps"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/outbox"
)

// reserved are the headers Record derives from the message itself. A
// caller's header of the same name is dropped: consumers deduplicate by
// id and order by sequence, so those must say what the row says, whatever
// else a writer put in Headers.
var reserved = map[string]bool{
	outbox.HeaderID:            true,
	outbox.HeaderType:          true,
	outbox.HeaderAggregateType: true,
	outbox.HeaderAggregateID:   true,
	outbox.HeaderSequence:      true,
}

// ReservedHeader reports whether Record sets the header key itself, so a
// message's own header of that name never reaches the record.
func ReservedHeader(key string) bool { return reserved[key] }

// Record builds the Kafka record for m: key = aggregate id; headers carry
// the event's identity and order (id, type, aggregatetype, aggregateid,
// sequence), then every header of m.Headers but those, sorted by name
// (trace context, baggage, whatever the writer set).
func Record(m outbox.Message, topic string) *kgo.Record {
	headers := make([]kgo.RecordHeader, 5, 5+len(m.Headers))
	headers[0] = kgo.RecordHeader{Key: outbox.HeaderID, Value: []byte(m.ID.String())}
	headers[1] = kgo.RecordHeader{Key: outbox.HeaderType, Value: []byte(m.Type)}
	headers[2] = kgo.RecordHeader{Key: outbox.HeaderAggregateType, Value: []byte(m.AggregateType)}
	headers[3] = kgo.RecordHeader{Key: outbox.HeaderAggregateID, Value: []byte(m.AggregateID)}
	headers[4] = kgo.RecordHeader{Key: outbox.HeaderSequence, Value: []byte(strconv.FormatInt(m.Sequence, 10))}
	switch len(m.Headers) {
	case 0:
	case 1: // the usual case (a traceparent): no sort
		for k, v := range m.Headers {
			if !reserved[k] {
				headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
		}
	default:
		for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
			if !reserved[k] {
				headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(m.Headers[k])})
			}
		}
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(m.AggregateID),
		Value:     m.Payload,
		Headers:   headers,
		Timestamp: m.Timestamp,
	}
}
