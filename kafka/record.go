package kafka

import (
	"encoding/hex"
	"maps"
	"slices"
	"strconv"

	"github.com/google/uuid"
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
	// Two allocations: the record with room for its headers, and one
	// buffer for every header's value and the key (the aggregate id's
	// header value); a record per event in the drain made these a tenth
	// of the relay's allocations.
	r := &recordWithHeaders{}
	headers := r.headers[:5]
	if len(m.Headers) > len(r.headers)-5 {
		headers = make([]kgo.RecordHeader, 5, 5+len(m.Headers))
	}
	size := 36 + len(m.Type) + len(m.AggregateType) + len(m.AggregateID) + 20
	for _, v := range m.Headers {
		size += len(v)
	}
	buf := make([]byte, 0, size)
	value := func(b []byte) []byte {
		v := b[len(buf):len(b):len(b)]
		buf = b
		return v
	}
	headers[0] = kgo.RecordHeader{Key: outbox.HeaderID, Value: value(appendUUID(buf, m.ID))}
	headers[1] = kgo.RecordHeader{Key: outbox.HeaderType, Value: value(append(buf, m.Type...))}
	headers[2] = kgo.RecordHeader{Key: outbox.HeaderAggregateType, Value: value(append(buf, m.AggregateType...))}
	headers[3] = kgo.RecordHeader{Key: outbox.HeaderAggregateID, Value: value(append(buf, m.AggregateID...))}
	headers[4] = kgo.RecordHeader{Key: outbox.HeaderSequence, Value: value(strconv.AppendInt(buf, m.Sequence, 10))}
	switch len(m.Headers) {
	case 0:
	case 1: // the usual case (a traceparent): no sort
		for k, v := range m.Headers {
			if !reserved[k] {
				headers = append(headers, kgo.RecordHeader{Key: k, Value: value(append(buf, v...))})
			}
		}
	default:
		for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
			if !reserved[k] {
				headers = append(headers, kgo.RecordHeader{Key: k, Value: value(append(buf, m.Headers[k]...))})
			}
		}
	}
	r.rec = kgo.Record{
		Topic:     topic,
		Key:       headers[3].Value,
		Value:     m.Payload,
		Headers:   headers,
		Timestamp: m.Timestamp,
	}
	return &r.rec
}

// recordWithHeaders is a record and room for its usual headers, allocated
// together.
type recordWithHeaders struct {
	rec     kgo.Record
	headers [6]kgo.RecordHeader
}

// appendUUID appends id in its canonical form, as id.String() spells it.
func appendUUID(b []byte, id uuid.UUID) []byte {
	b = hex.AppendEncode(b, id[0:4])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[4:6])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[6:8])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[8:10])
	b = append(b, '-')
	return hex.AppendEncode(b, id[10:16])
}
