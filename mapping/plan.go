package mapping

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is what a column holds, as far as a mapping cares. Stores map
// their own types to it (see store/postgres and store/sqlite).
type Kind uint8

const (
	KindOther   Kind = iota // anything else: fine as a header or envelope field
	KindText                // text, varchar, char, enums; SQLite TEXT
	KindUUID                // uuid
	KindInteger             // smallint, integer, bigint; SQLite INTEGER
	KindJSON                // json, jsonb
	KindBytes               // bytea; SQLite BLOB
	KindTime                // timestamp, timestamptz; SQLite DATETIME, TIMESTAMP
	KindBool                // boolean
	KindTxID                // xid8
)

var kindNames = [...]string{"other", "text", "uuid", "integer", "json", "bytes", "timestamp", "boolean", "xid8"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Format is how a store hands a column's values to Decode.
type Format uint8

const (
	// FormatText: the value's text, or its bytes as they are (a SQLite
	// BLOB). A time is PostgreSQL's ISO output, RFC 3339, SQLite's
	// "YYYY-MM-DD HH:MM:SS" (UTC without an offset), or an integer count
	// of seconds, milliseconds, microseconds or nanoseconds since 1970,
	// told apart by magnitude (each gives a date between 1973 and 5138).
	FormatText Format = iota
	// FormatHex: PostgreSQL's bytea text, \x and hex digits; decoded to
	// the bytes for ids and payloads.
	FormatHex
)

// Column is one column of a table as the store describes it.
type Column struct {
	Name string
	// Type is the database's own name for the column's type, for
	// messages.
	Type   string
	Kind   Kind
	Format Format
}

// Field is a mapped column: its index among the columns Resolve was
// given, or -1 when the mapping has none for the role.
type Field struct {
	Index  int
	Column Column
}

// Placed is an additional column, resolved.
type Placed struct {
	Field
	Placement Placement
	Alias     string
}

// Order names the columns a polling source reads in order of; CDC,
// which reads in commit order, needs none.
type Order struct {
	// Position must be an integer column (table.field.poll.position).
	Position string
	// TxID must be an xid8 column (table.field.poll.txid).
	TxID string
}

// Plan is a mapping resolved against a table's columns, once: decoding a
// row looks no column up by name.
type Plan struct {
	// Table names the table in messages, as the store gave it.
	Table string
	// Mapping is what was resolved, normalized.
	Mapping Mapping

	ID, Key, AggregateType, Type, Payload, Timestamp, Sequence, Headers Field
	// Position and TxID are the polling order's columns, when asked for.
	Position, TxID Field
	// Additional are the placed columns the table has (a missing one is
	// dropped under IgnoreMissingAdditional).
	Additional []Placed

	columns  []Column
	envelope bool
}

// ErrMissingColumn and ErrColumnType are wrapped by ColumnError.
var (
	ErrMissingColumn = errors.New("no such column")
	ErrColumnType    = errors.New("column of the wrong type")
)

// ErrNoTable is wrapped, with ErrInvalid, when the mapped table does not
// exist or is not a table.
var ErrNoTable = errors.New("no such table")

// ErrUnsafeOrder is wrapped, with ErrInvalid, when a polling source
// refuses a table because it offers no order in which a row committed late
// could not be skipped: the relay refuses to start rather than lose
// events.
var ErrUnsafeOrder = errors.New("the table gives polling no safe order")

// ColumnError says which mapped column does not fit the table. It wraps
// ErrMissingColumn or ErrColumnType, and ErrInvalid.
type ColumnError struct {
	Table  string
	Column string
	// Key is the configuration key that names the column.
	Key string
	// Type is the column's type, and Want the kinds the key accepts,
	// for ErrColumnType.
	Type string
	Want []Kind
	Err  error
}

func (e *ColumnError) Error() string {
	if errors.Is(e.Err, ErrMissingColumn) {
		return fmt.Sprintf("mapping: table %s has no column %q (%s)", e.Table, e.Column, e.Key)
	}
	want := make([]string, len(e.Want))
	for i, k := range e.Want {
		want[i] = k.String()
	}
	return fmt.Sprintf("mapping: table %s: column %q (%s) is %s; %s needs %s", e.Table, e.Column, e.Key, e.Type, e.Key, strings.Join(want, " or "))
}

func (e *ColumnError) Unwrap() []error { return []error{e.Err, ErrInvalid} }

// Resolve checks m (which Normalize must have passed) against the
// columns of table, as the store describes them, and returns the plan
// that decodes its rows. Every column that does not fit is reported, each
// as a *ColumnError, joined.
func (m Mapping) Resolve(table string, cols []Column, order Order) (*Plan, error) {
	p := &Plan{Table: table, Mapping: m, columns: cols}
	var errs []error
	find := func(key, name string, required bool, want ...Kind) Field {
		if name == "" {
			return Field{Index: -1}
		}
		for i, c := range cols {
			if c.Name != name {
				continue
			}
			if len(want) > 0 && !kindIn(c.Kind, want) {
				errs = append(errs, &ColumnError{Table: table, Column: name, Key: key, Type: c.Type, Want: want, Err: ErrColumnType})
			}
			return Field{Index: i, Column: c}
		}
		if required {
			errs = append(errs, &ColumnError{Table: table, Column: name, Key: key, Err: ErrMissingColumn})
		}
		return Field{Index: -1}
	}
	p.ID = find(KeyEventID, m.EventID, true, KindUUID, KindText, KindBytes)
	p.Key = find(KeyEventKey, m.EventKey, true, KindText, KindUUID, KindInteger)
	p.AggregateType = find(KeyAggregateType, m.AggregateType, true, KindText)
	p.Type = find(KeyEventType, m.EventType, true, KindText)
	p.Payload = find(KeyPayload, m.Payload, true, KindJSON, KindText, KindBytes)
	p.Timestamp = find(KeyTimestamp, m.Timestamp, true, KindTime, KindInteger, KindText)
	p.Sequence = find(KeySequence, m.Sequence, true, KindInteger)
	p.Headers = find(KeyHeaders, m.Headers, true, KindJSON, KindText)
	p.Position = find(KeyPollPosition, order.Position, true, KindInteger)
	p.TxID = find(KeyPollTxID, order.TxID, true, KindTxID)
	for _, a := range m.Additional {
		f := find(KeyAdditional, a.Column, !m.IgnoreMissingAdditional)
		if f.Index < 0 {
			continue
		}
		if col, reserved := m.reservedHeader(a.Alias); a.Placement == Header && reserved && col == a.Column {
			continue // the publisher sets it from the same column already
		}
		p.Additional = append(p.Additional, Placed{Field: f, Placement: a.Placement, Alias: a.Alias})
		p.envelope = p.envelope || a.Placement == Envelope
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func kindIn(k Kind, in []Kind) bool {
	for _, w := range in {
		if k == w {
			return true
		}
	}
	return false
}

// Used lists the indexes of the columns the plan reads, each once, in
// table order: what a polling query selects.
func (p *Plan) Used() []int {
	used := make([]bool, len(p.columns))
	for _, f := range []Field{p.ID, p.Key, p.AggregateType, p.Type, p.Payload, p.Timestamp, p.Sequence, p.Headers, p.Position, p.TxID} {
		if f.Index >= 0 {
			used[f.Index] = true
		}
	}
	for _, a := range p.Additional {
		used[a.Index] = true
	}
	var out []int
	for i, u := range used {
		if u {
			out = append(out, i)
		}
	}
	return out
}

// Columns are the table's columns, as Resolve was given them.
func (p *Plan) Columns() []Column { return p.columns }
