package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Header names written on every Kafka record. They match the outbox column
// names so tools that know Debezium's outbox router recognise them.
const (
	HeaderID            = "id"
	HeaderType          = "type"
	HeaderAggregateType = "aggregatetype"
	HeaderAggregateID   = "aggregateid"
	HeaderSequence      = "sequence"
	HeaderTraceParent   = "traceparent"
)

// Message is one outbox row: an event that happened to an aggregate.
type Message struct {
	ID            uuid.UUID         `json:"id"`
	AggregateType string            `json:"aggregatetype"`
	AggregateID   string            `json:"aggregateid"`
	Type          string            `json:"type"`
	Sequence      int64             `json:"sequence"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers,omitempty"`
	Timestamp     time.Time         `json:"timestamp"`
}

// Key identifies the aggregate the message belongs to.
func (m Message) Key() AggregateKey {
	return AggregateKey{Type: m.AggregateType, ID: m.AggregateID}
}

// NewMessage builds a message with a fresh UUIDv7 id and the current time.
// The payload must be valid JSON.
func NewMessage(aggregateType, aggregateID, eventType string, sequence int64, payload any) (Message, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return Message{}, fmt.Errorf("outbox: encode payload of %s: %w", eventType, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Message{}, fmt.Errorf("outbox: new event id: %w", err)
	}
	m := Message{
		ID:            id,
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		Type:          eventType,
		Sequence:      sequence,
		Payload:       raw,
		// Microseconds: what every store keeps, so a message round-trips exactly.
		Timestamp: time.Now().UTC().Truncate(time.Microsecond),
	}
	return m, m.Validate()
}

// ErrInvalidMessage is wrapped by every validation failure of a Message.
var ErrInvalidMessage = errors.New("invalid outbox message")

// Validate reports the first field that makes the message unpublishable.
func (m Message) Validate() error {
	switch {
	case m.ID == uuid.Nil:
		return fmt.Errorf("%w: id is empty", ErrInvalidMessage)
	case m.AggregateType == "":
		return fmt.Errorf("%w %s: aggregatetype is empty", ErrInvalidMessage, m.ID)
	case m.AggregateID == "":
		return fmt.Errorf("%w %s: aggregateid is empty", ErrInvalidMessage, m.ID)
	case m.Type == "":
		return fmt.Errorf("%w %s: type is empty", ErrInvalidMessage, m.ID)
	case m.Sequence < 0:
		return fmt.Errorf("%w %s: sequence %d is negative", ErrInvalidMessage, m.ID, m.Sequence)
	case !json.Valid(m.Payload):
		return fmt.Errorf("%w %s: payload is not valid JSON", ErrInvalidMessage, m.ID)
	}
	return nil
}

// AggregateKey names one aggregate: the unit of ordering and of parking.
type AggregateKey struct {
	Type string `json:"aggregatetype"`
	ID   string `json:"aggregateid"`
}

func (k AggregateKey) String() string { return k.Type + "/" + k.ID }
