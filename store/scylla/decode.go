package scylla

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
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
	GetSeqNo() int32
	GetRawMapData() map[string]any
}

// decodeRow turns a CDC delta row into an outbox message. ok is false for
// rows that are not outbox inserts (pre- and post-images, updates,
// deletes from retention): they carry no event. On error m holds every
// field that could be read: the dead letter of the row is built from it.
func decodeRow(r changeRow) (m outbox.Message, ok bool, err error) {
	if r.GetOperation() != scyllacdc.Insert {
		return m, false, nil
	}
	var errs []error
	text := func(col string) string {
		v, _ := r.GetValue(col)
		s, isStr := v.(*string)
		if !isStr || s == nil {
			errs = append(errs, fmt.Errorf("column %s: want text, got %T", col, v))
			return ""
		}
		return *s
	}
	m.AggregateType, m.AggregateID, m.Type = text("aggregatetype"), text("aggregateid"), text("type")
	m.Payload = json.RawMessage(text("payload"))
	switch v, _ := r.GetValue("id"); id := v.(type) {
	case *gocql.UUID:
		if id == nil {
			errs = append(errs, errors.New("column id is null"))
		} else {
			m.ID = uuid.UUID(*id)
		}
	default:
		errs = append(errs, fmt.Errorf("column id: want uuid, got %T", v))
	}
	switch v, _ := r.GetValue("sequence"); n := v.(type) {
	case *int64:
		if n == nil {
			errs = append(errs, errors.New("column sequence is null"))
		} else {
			m.Sequence = *n
		}
	default:
		errs = append(errs, fmt.Errorf("column sequence: want bigint, got %T", v))
	}
	switch v, _ := r.GetValue("timestamp"); us := v.(type) {
	case *int64:
		if us != nil {
			m.Timestamp = time.UnixMicro(*us).UTC()
		}
	default:
		errs = append(errs, fmt.Errorf("column timestamp: want bigint microseconds, got %T", v))
	}
	if v, present := r.GetValue("headers"); present && v != nil {
		h, isMap := v.(map[string]string)
		if !isMap {
			errs = append(errs, fmt.Errorf("column headers: want map<text, text>, got %T", v))
		} else if len(h) > 0 {
			m.Headers = h
		}
	}
	if len(errs) == 0 {
		errs = append(errs, m.Validate())
	}
	return m, true, errors.Join(errs...)
}

// undecodableSpace names the ids made up for rows whose own id cannot be
// read.
var undecodableSpace = uuid.MustParse("0f6d3c1e-8a53-4b7e-9a1d-5c2f3e4a6b70")

// Placeholders for what an undecodable row does not say.
const (
	undecodableType      = "undecodable"
	undecodableAggregate = "cdc-undecodable"
)

// undecodable is the dead letter of a row that cannot be decoded: what
// could be read of it (its id, aggregate, sequence and headers), and the
// raw columns as the payload. What is missing is derived from the row's
// place in the log (stream, cdc$time, cdc$batch_seq_no), so reading the
// same row again after a restart gives the same id and aggregate, and the
// dead-letter store keeps one entry for it.
func undecodable(stream string, at gocql.UUID, r changeRow, partial outbox.Message, cause error) outbox.Message {
	m := partial
	place := fmt.Sprintf("%x/%s/%d", stream, at, r.GetSeqNo())
	if m.ID == uuid.Nil {
		m.ID = uuid.NewSHA1(undecodableSpace, []byte(place))
	}
	if m.AggregateType == "" {
		m.AggregateType = undecodableAggregate
	}
	if m.AggregateID == "" {
		m.AggregateID = fmt.Sprintf("%x/%s", stream, at)
	}
	if m.Type == "" {
		m.Type = undecodableType
	}
	m.Sequence = max(m.Sequence, 0)
	if m.Timestamp.IsZero() {
		m.Timestamp = at.Time().UTC().Truncate(time.Microsecond)
	}
	m.Payload = rawPayload(stream, at, r, cause)
	return m
}

// rawPayload renders a row's columns as JSON, whatever their types.
func rawPayload(stream string, at gocql.UUID, r changeRow, cause error) json.RawMessage {
	cols := map[string]any{}
	raw := r.GetRawMapData()
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		cols[k] = renderValue(raw[k])
	}
	doc := map[string]any{
		"error":            cause.Error(),
		"cdc$stream_id":    "0x" + hex.EncodeToString([]byte(stream)),
		"cdc$time":         at.String(),
		"cdc$batch_seq_no": r.GetSeqNo(),
		"columns":          cols,
	}
	b, err := json.Marshal(doc)
	if err != nil { // a value json cannot encode: fall back to its text
		for k, v := range cols {
			cols[k] = fmt.Sprint(v)
		}
		b, _ = json.Marshal(doc)
	}
	return b
}

// renderValue turns a value as gocql decodes it (scalars as pointers,
// blobs as bytes, collections as slices and maps) into one JSON can hold.
func renderValue(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		return "0x" + hex.EncodeToString(x)
	case gocql.UUID:
		return x.String()
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return renderValue(rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = renderValue(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out[fmt.Sprint(renderValue(it.Key().Interface()))] = renderValue(it.Value().Interface())
		}
		return out
	case reflect.Float32, reflect.Float64:
		if f := rv.Float(); f != f || f > 1e308 || f < -1e308 {
			return fmt.Sprint(f) // NaN and infinities are not JSON
		}
	}
	if _, err := json.Marshal(v); err != nil {
		return fmt.Sprint(v)
	}
	return v
}
