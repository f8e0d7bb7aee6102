package scylla

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/outbox"
)

// changeRow is what the consumer reads of a scylla-cdc-go ChangeRow
// (whose fields are unexported): tests fake it.
type changeRow interface {
	GetOperation() scyllacdc.OperationType
	GetValue(column string) (any, bool)
}

// decodeRow turns a CDC delta row into an outbox message. ok is false for
// rows that are not outbox inserts (pre- and post-images, updates,
// deletes from retention): they carry no event.
func decodeRow(r changeRow) (m outbox.Message, ok bool, err error) {
	if r.GetOperation() != scyllacdc.Insert {
		return m, false, nil
	}
	text := func(col string) (string, error) {
		v, _ := r.GetValue(col)
		s, isStr := v.(*string)
		if !isStr || s == nil {
			return "", fmt.Errorf("column %s: want text, got %T", col, v)
		}
		return *s, nil
	}
	if m.AggregateType, err = text("aggregatetype"); err != nil {
		return m, true, err
	}
	if m.AggregateID, err = text("aggregateid"); err != nil {
		return m, true, err
	}
	if m.Type, err = text("type"); err != nil {
		return m, true, err
	}
	payload, err := text("payload")
	if err != nil {
		return m, true, err
	}
	m.Payload = json.RawMessage(payload)
	switch v, _ := r.GetValue("id"); id := v.(type) {
	case *gocql.UUID:
		if id == nil {
			return m, true, fmt.Errorf("column id is null")
		}
		m.ID = uuid.UUID(*id)
	default:
		return m, true, fmt.Errorf("column id: want uuid, got %T", v)
	}
	switch v, _ := r.GetValue("sequence"); n := v.(type) {
	case *int64:
		if n == nil {
			return m, true, fmt.Errorf("column sequence is null")
		}
		m.Sequence = *n
	default:
		return m, true, fmt.Errorf("column sequence: want bigint, got %T", v)
	}
	switch v, _ := r.GetValue("timestamp"); us := v.(type) {
	case *int64:
		if us != nil {
			m.Timestamp = time.UnixMicro(*us).UTC()
		}
	default:
		return m, true, fmt.Errorf("column timestamp: want bigint microseconds, got %T", v)
	}
	if v, present := r.GetValue("headers"); present && v != nil {
		h, isMap := v.(map[string]string)
		if !isMap {
			return m, true, fmt.Errorf("column headers: want map<text, text>, got %T", v)
		}
		if len(h) > 0 {
			m.Headers = h
		}
	}
	return m, true, m.Validate()
}
