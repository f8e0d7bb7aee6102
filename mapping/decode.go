package mapping

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/outbox"
)

// ErrRow is wrapped by every error of a row that does not decode: the
// store hands such a row to the relay as a dead letter (outbox.Record's
// Err), and the rows after it go on.
var ErrRow = errors.New("row does not decode")

// Decoder decodes rows of one plan. It remembers the last event type and
// aggregate type it decoded, which repeat from row to row, so they cost no
// allocation: use one per goroutine.
type Decoder struct {
	p            *Plan
	typ, aggType string
	headerCap    int
}

// Decoder returns a decoder for the plan's rows.
func (p *Plan) Decoder() *Decoder {
	d := &Decoder{p: p}
	for _, a := range p.Additional {
		if a.Placement == Header {
			d.headerCap++
		}
	}
	return d
}

// Decode turns a row into a message. vals holds the text form of each of
// the plan's columns (see Format) at its index, nil for NULL; only the
// columns of Plan.Used are read. at is the message's timestamp when the
// mapping has no timestamp column or the row's is NULL. Nothing of vals
// is kept: the store may reuse it.
func (d *Decoder) Decode(vals [][]byte, at time.Time) (outbox.Message, error) {
	p := d.p
	var m outbox.Message
	var err error
	// The aggregate first: a row that fails later still parks its own
	// aggregate (see Undecodable), so its later events wait behind it.
	if m.AggregateType, err = intern(&d.aggType, vals[p.AggregateType.Index]); err != nil {
		return m, p.rowErr(p.AggregateType, KeyAggregateType, err)
	}
	if v := vals[p.Key.Index]; len(v) > 0 {
		m.AggregateID = string(v)
	} else {
		m.AggregateType = ""
		return m, p.rowErr(p.Key, KeyEventKey, errNullOrEmpty(v))
	}
	if m.ID, err = decodeID(vals[p.ID.Index], p.ID.Column); err != nil {
		return m, p.rowErr(p.ID, KeyEventID, err)
	}
	if m.Type, err = intern(&d.typ, vals[p.Type.Index]); err != nil {
		return m, p.rowErr(p.Type, KeyEventType, err)
	}
	m.Timestamp = at
	if f := p.Timestamp; f.Index >= 0 && vals[f.Index] != nil {
		if m.Timestamp, err = parseTime(vals[f.Index]); err != nil {
			return m, p.rowErr(f, KeyTimestamp, err)
		}
	}
	if f := p.Sequence; f.Index >= 0 && vals[f.Index] != nil {
		var ok bool
		if m.Sequence, ok = parseInt(vals[f.Index]); !ok || m.Sequence < 0 {
			return m, p.rowErr(f, KeySequence, fmt.Errorf("%q is not an integer of at least 0", vals[f.Index]))
		}
	}
	if f := p.Headers; f.Index >= 0 {
		if v := bytes.TrimSpace(vals[f.Index]); len(v) > 0 && string(v) != "{}" && string(v) != "null" {
			// A variable of its own: &m.Headers would move every
			// message to the heap.
			var h map[string]string
			if err := json.Unmarshal(v, &h); err != nil {
				return m, p.rowErr(f, KeyHeaders, fmt.Errorf("not a JSON object of strings: %w", err))
			}
			m.Headers = h
		}
	}
	for _, a := range p.Additional {
		v := vals[a.Index]
		if a.Placement != Header || v == nil {
			continue // a NULL column places no header
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, d.headerCap)
		}
		m.Headers[a.Alias] = string(v)
	}
	payload := vals[p.Payload.Index]
	if p.Mapping.TombstoneOnEmptyPayload && len(bytes.TrimSpace(payload)) == 0 {
		return m, nil // a nil payload: the record's value is null
	}
	if p.envelope {
		m.Payload, err = d.envelope(vals)
	} else {
		m.Payload, err = bytesOf(payload, p.Payload.Column.Format)
	}
	if err != nil {
		return m, p.rowErr(p.Payload, KeyPayload, err)
	}
	return m, nil
}

func (p *Plan) rowErr(f Field, key string, err error) error {
	return fmt.Errorf("mapping: %w: table %s, column %q (%s): %w", ErrRow, p.Table, f.Column.Name, key, err)
}

func errNullOrEmpty(v []byte) error {
	if v == nil {
		return errors.New("is NULL")
	}
	return errors.New("is empty")
}

// intern returns v as a string, the last one's when v is the same, which
// compares without allocating.
func intern(last *string, v []byte) (string, error) {
	if len(v) == 0 {
		return "", errNullOrEmpty(v)
	}
	if string(v) != *last {
		*last = string(v)
	}
	return *last, nil
}

func decodeID(v []byte, c Column) (uuid.UUID, error) {
	if v == nil {
		return uuid.Nil, errors.New("is NULL")
	}
	if c.Format == FormatHex {
		b, err := unhex(v)
		if err != nil {
			return uuid.Nil, err
		}
		v = b
	}
	var id uuid.UUID
	var err error
	if len(v) == 16 && (c.Kind == KindBytes || c.Kind == KindUUID) {
		id, err = uuid.FromBytes(v)
	} else {
		id, err = uuid.ParseBytes(v)
	}
	if err == nil && id == uuid.Nil {
		err = errors.New("is the nil UUID")
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("not a UUID: %w", err)
	}
	return id, nil
}

// bytesOf copies a value out of the store's buffer, decoding bytea's hex.
// NULL stays nil: a record with a null value.
func bytesOf(v []byte, f Format) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	if f == FormatHex {
		return unhex(v)
	}
	return append(make([]byte, 0, len(v)), v...), nil
}

func unhex(v []byte) ([]byte, error) {
	if !bytes.HasPrefix(v, []byte(`\x`)) {
		return nil, errors.New(`bytea text must start with \x (bytea_output = hex)`)
	}
	out := make([]byte, hex.DecodedLen(len(v)-2))
	if _, err := hex.Decode(out, v[2:]); err != nil {
		return nil, fmt.Errorf("bytea text: %w", err)
	}
	return out, nil
}

// envelope renders Debezium's envelope as JSON, as its JSON converter
// does without schemas: {"payload": ..., "<alias>": ...}. JSON columns
// are embedded, numbers and booleans bare, bytes in base64, the rest as
// strings of their text; a text payload holding a JSON object or array
// is embedded when ExpandJSONPayload is set.
func (d *Decoder) envelope(vals [][]byte) ([]byte, error) {
	p := d.p
	out := append(make([]byte, 0, 64+len(vals[p.Payload.Index])), `{"payload":`...)
	var err error
	if out, err = appendJSONValue(out, vals[p.Payload.Index], p.Payload.Column, p.Mapping.ExpandJSONPayload); err != nil {
		return nil, err
	}
	for _, a := range p.Additional {
		if a.Placement != Envelope {
			continue
		}
		out = append(out, ',')
		out = appendJSONString(out, a.Alias)
		out = append(out, ':')
		if out, err = appendJSONValue(out, vals[a.Index], a.Column, false); err != nil {
			return nil, fmt.Errorf("envelope field %q: %w", a.Alias, err)
		}
	}
	return append(out, '}'), nil
}

func appendJSONValue(out, v []byte, c Column, expand bool) ([]byte, error) {
	if v == nil {
		return append(out, "null"...), nil
	}
	switch c.Kind {
	case KindJSON:
		if !json.Valid(v) {
			return nil, errors.New("not valid JSON")
		}
		return append(out, v...), nil
	case KindInteger:
		if _, ok := parseInt(v); ok {
			return append(out, v...), nil
		}
	case KindBool:
		switch string(v) {
		case "t", "true", "1":
			return append(out, "true"...), nil
		case "f", "false", "0":
			return append(out, "false"...), nil
		}
	case KindBytes:
		b := v
		if c.Format == FormatHex {
			var err error
			if b, err = unhex(v); err != nil {
				return nil, err
			}
		}
		out = append(out, '"')
		out = base64.StdEncoding.AppendEncode(out, b)
		return append(out, '"'), nil
	case KindText:
		if t := bytes.TrimSpace(v); expand && len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
			return append(out, t...), nil
		}
	}
	return appendJSONString(out, string(v)), nil
}

func appendJSONString(out []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(out, b...)
}

// parseTime reads a time in any of FormatText's forms.
func parseTime(v []byte) (time.Time, error) {
	if t, ok := parseISO(v); ok {
		return t, nil
	}
	if n, ok := parseInt(v); ok {
		return epoch(n), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, string(v)); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time this relay reads (ISO 8601 / RFC 3339, or seconds, milliseconds, microseconds or nanoseconds since 1970)", v)
}

// parseInt reads a decimal int64 without the allocation of
// strconv.ParseInt(string(v)), whose error keeps the string.
func parseInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg || len(v) > 0 && v[0] == '+' {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// epoch reads n as seconds, milliseconds, microseconds or nanoseconds
// since 1970, whichever puts it between 1973 and 5138.
func epoch(n int64) time.Time {
	a := n
	if a < 0 {
		a = -a
	}
	switch {
	case a < 1e11:
		return time.Unix(n, 0).UTC()
	case a < 1e14:
		return time.UnixMilli(n).UTC()
	case a < 1e17:
		return time.UnixMicro(n).UTC()
	}
	return time.Unix(0, n).UTC()
}

// parseISO reads "YYYY-MM-DD HH:MM:SS[.fraction][offset]" (or with a T):
// PostgreSQL's output, which the CDC stream carries for every row, without
// the cost of time.Parse. The offset is Z, ±HH, ±HH:MM or ±HH:MM:SS; none
// means UTC. Anything else is left to the slower paths.
func parseISO(v []byte) (time.Time, bool) {
	if len(v) < 19 || v[4] != '-' || v[7] != '-' || (v[10] != ' ' && v[10] != 'T') || v[13] != ':' || v[16] != ':' {
		return time.Time{}, false
	}
	num := func(b []byte) (int, bool) {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(v[0:4])
	month, ok2 := num(v[5:7])
	day, ok3 := num(v[8:10])
	hour, ok4 := num(v[11:13])
	minute, ok5 := num(v[14:16])
	sec, ok6 := num(v[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 60 {
		return time.Time{}, false
	}
	rest := v[19:]
	nsec := 0
	if len(rest) > 0 && rest[0] == '.' {
		i := 1
		scale := 100_000_000
		for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
			nsec += int(rest[i]-'0') * scale
			scale /= 10
		}
		if i == 1 || i > 10 {
			return time.Time{}, false
		}
		rest = rest[i:]
	}
	offset := 0
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == 'Z':
	case rest[0] == '+' || rest[0] == '-':
		// ±HH, ±HH:MM or ±HH:MM:SS
		z := rest[1:]
		if len(z) != 2 && len(z) != 5 && len(z) != 8 {
			return time.Time{}, false
		}
		for i, scale := 0, 3600; i < len(z); i, scale = i+3, scale/60 {
			n, ok := num(z[i : i+2])
			if !ok || (i+2 < len(z) && z[i+2] != ':') {
				return time.Time{}, false
			}
			offset += n * scale
		}
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), true
}

// undecodableSpace names the ids made up for rows whose own id does not
// decode; undecodableAggregate and undecodableType stand for what such a
// row does not say.
var undecodableSpace = uuid.MustParse("5f0e7d3a-93c1-4b1e-8a6f-2d4c9b7e1a30")

const (
	undecodableAggregate = "outbox.undecodable"
	undecodableType      = "Undecodable"
)

// Undecodable is the dead letter of a row Decode refused: what could be
// read of it (partial), and the row's columns as a JSON payload, with the
// error. What is missing is derived from place, the row's place in its
// source (a WAL position, a polling position), so reading the row again
// gives the same id and the dead-letter store keeps one entry for it. A
// row whose aggregate is unknown parks an aggregate of its own.
func (p *Plan) Undecodable(place string, vals [][]byte, partial outbox.Message, cause error) outbox.Message {
	m := partial
	where := p.Table + "@" + place
	if m.ID == uuid.Nil {
		m.ID = uuid.NewSHA1(undecodableSpace, []byte(where))
	}
	if m.AggregateType == "" || m.AggregateID == "" {
		m.AggregateType, m.AggregateID = undecodableAggregate, where
	}
	if m.Type == "" {
		m.Type = undecodableType
	}
	m.Sequence = max(m.Sequence, 0)
	if m.Timestamp.IsZero() {
		m.Timestamp = time.Now().UTC().Truncate(time.Microsecond)
	}
	cols := map[string]any{}
	for _, i := range p.Used() {
		if v := vals[i]; v != nil {
			cols[p.columns[i].Name] = string(v)
		} else {
			cols[p.columns[i].Name] = nil
		}
	}
	m.Payload, _ = json.Marshal(map[string]any{"error": cause.Error(), "table": p.Table, "place": place, "columns": cols})
	return m
}
