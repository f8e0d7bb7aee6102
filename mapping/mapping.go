package mapping

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/outbox-dev/outbox/outbox"
)

// The configuration keys. Those marked "outbox" are not Debezium's: its
// connector names the table elsewhere, and has no sequence column and no
// polling order.
const (
	KeyTable             = "table.name" // outbox
	KeyEventID           = "table.field.event.id"
	KeyEventKey          = "table.field.event.key"
	KeyEventType         = "table.field.event.type"
	KeyPayload           = "table.field.event.payload"
	KeyTimestamp         = "table.field.event.timestamp"
	KeyAggregateType     = "table.field.event.aggregatetype" // outbox
	KeySequence          = "table.field.event.sequence"      // outbox
	KeyHeaders           = "table.field.event.headers"       // outbox
	KeyAdditional        = "table.fields.additional.placement"
	KeyAdditionalMissing = "table.field.additional.missing"
	KeyExpandJSONPayload = "table.expand.json.payload"
	KeyRouteBy           = "route.by.field"
	KeyTopicRegex        = "route.topic.regex"
	KeyTopicReplacement  = "route.topic.replacement"
	KeyTombstone         = "route.tombstone.on.empty.payload"
	KeyPollPosition      = "table.field.poll.position" // outbox
	KeyPollTxID          = "table.field.poll.txid"     // outbox

	// Accepted for a configuration copied from Debezium, with no effect
	// (see Options for why).
	KeyInvalidOperation     = "table.op.invalid.behavior"
	KeyJSONNullBehavior     = "table.json.payload.null.behavior"
	KeyJSONEmptyArray       = "table.json.payload.empty.array.behavior"
	KeyTracingContextField  = "tracing.span.context.field"
	KeyTracingOperationName = "tracing.operation.name"
	KeyTracingContextOnly   = "tracing.with.context.field.only"

	// Refused: what they ask for cannot be done here (see Options).
	KeySchemaVersion = "table.field.event.schema.version"
)

// Debezium's defaults.
const (
	DefaultEventID          = "id"
	DefaultEventKey         = "aggregateid"
	DefaultEventType        = "type"
	DefaultPayload          = "payload"
	DefaultRouteBy          = "aggregatetype"
	DefaultTopicRegex       = "(?<routedByValue>.*)"
	DefaultTopicReplacement = "outbox.event.${routedByValue}"

	// RoutedByValue is the variable route.topic.replacement fills with
	// the route.by.field column's value.
	RoutedByValue = "${routedByValue}"
)

// ErrInvalid is wrapped by every error about a mapping's own settings.
var ErrInvalid = errors.New("invalid outbox table mapping")

// ErrUnsupported is wrapped, with ErrInvalid, by the errors for Debezium
// settings outbox does not carry out: refused rather than ignored, since
// the records would not be what the configuration asks for.
var ErrUnsupported = errors.New("not supported")

// Placement is where an additional column goes.
type Placement string

const (
	// Header adds the column's value, as text, as a Kafka header named
	// by the alias.
	Header Placement = "header"
	// Envelope makes the record's value a JSON object: the payload under
	// "payload" and each envelope column under its alias.
	Envelope Placement = "envelope"
)

// Additional is one entry of table.fields.additional.placement.
type Additional struct {
	Column    string
	Placement Placement
	// Alias names the header or envelope field; empty means Column.
	Alias string
}

// Mapping names a table and its columns. Empty fields take Debezium's
// defaults (see Normalize). It is a plain value: build it in Go or with
// Parse; the stores check it against the table when the relay starts.
type Mapping struct {
	// Table is "table" or "schema.table" (the store's default schema
	// when unqualified: the search path on PostgreSQL, main on SQLite).
	// Names are exact, as the database stores them, not folded.
	Table string

	// EventID holds the event id: a uuid, or text or 16 bytes holding
	// one (default "id"). It is the record's id header, by which
	// consumers drop duplicates.
	EventID string
	// EventKey holds the aggregate id: the record's key, and with
	// AggregateType the unit of ordering and of parking (default
	// "aggregateid"): text, a uuid or an integer.
	EventKey string
	// EventType holds the event type (default "type"): text.
	EventType string
	// Payload holds the record's value (default "payload"): JSON, text
	// or bytes, sent as its bytes.
	Payload string
	// Timestamp holds the record's timestamp (default none: the commit
	// time with CDC, the time the row was read with polling).
	Timestamp string
	// AggregateType holds the aggregate type (default: the RouteBy
	// column, which is Debezium's aggregatetype): text.
	AggregateType string
	// Sequence holds the aggregate's version, sent as the sequence
	// header (default none: 0). An integer.
	Sequence string
	// Headers holds a JSON object of string values, each sent as a
	// header (outbox's own table has one; default none).
	Headers string

	// RouteBy is the column whose value routes the record (default
	// "aggregatetype"). It must be the AggregateType or the EventType
	// column: the publisher routes by those.
	RouteBy string
	// TopicRegex is Debezium's route.topic.regex; only its default is
	// supported.
	TopicRegex string
	// TopicReplacement is the topic, with ${routedByValue} standing for
	// the RouteBy column's value (default "outbox.event.${routedByValue}").
	TopicReplacement string
	// TombstoneOnEmptyPayload sends a record whose payload is NULL, empty
	// or only white space with a null value: a tombstone.
	TombstoneOnEmptyPayload bool
	// ExpandJSONPayload embeds a text payload that holds a JSON object or
	// array in the envelope as JSON rather than as a string. Without
	// envelope columns it changes nothing: the payload's bytes are sent
	// as they are, so JSON text is sent as JSON either way.
	ExpandJSONPayload bool

	// Additional places more columns as headers or envelope fields.
	Additional []Additional
	// IgnoreMissingAdditional drops an additional column the table does
	// not have instead of refusing to start
	// (table.field.additional.missing=ignore).
	IgnoreMissingAdditional bool

	// PollPosition orders polling: on PostgreSQL a unique integer column
	// filled in insert order, such as a bigserial (default "position");
	// on SQLite the table's INTEGER PRIMARY KEY AUTOINCREMENT, found by
	// itself. CDC needs none.
	PollPosition string
	// PollTxID is, for polling PostgreSQL, an xid8 column defaulting to
	// pg_current_xact_id(): the transaction that wrote the row (default
	// "txid"). Polling reads a row only once every transaction below its
	// txid has ended, so a late commit is never skipped.
	PollTxID string
}

// Outbox is the mapping of outbox's own table: Debezium's columns, plus a
// timestamp, a sequence, a headers object and the polling order. A store
// given no mapping reads this one.
func Outbox() Mapping {
	return Mapping{
		Table:         "outbox",
		EventID:       DefaultEventID,
		EventKey:      DefaultEventKey,
		EventType:     DefaultEventType,
		Payload:       DefaultPayload,
		Timestamp:     "timestamp",
		AggregateType: DefaultRouteBy,
		Sequence:      "sequence",
		Headers:       "headers",
		RouteBy:       DefaultRouteBy,
		PollPosition:  "position",
		PollTxID:      "txid",
	}.mustNormalize()
}

func (m Mapping) mustNormalize() Mapping {
	n, err := m.Normalize()
	if err != nil {
		panic(err)
	}
	return n
}

// Normalize fills in the defaults and checks what can be checked without
// the table: the names, the routing, the placements. The stores call it;
// a mapping that passes may still not fit its table (see Resolve).
func (m Mapping) Normalize() (Mapping, error) {
	m.Additional = slices.Clone(m.Additional)
	def := func(s *string, d string) {
		*s = strings.TrimSpace(*s)
		if *s == "" {
			*s = d
		}
	}
	def(&m.Table, "")
	def(&m.EventID, DefaultEventID)
	def(&m.EventKey, DefaultEventKey)
	def(&m.EventType, DefaultEventType)
	def(&m.Payload, DefaultPayload)
	def(&m.Timestamp, "")
	def(&m.RouteBy, DefaultRouteBy)
	def(&m.AggregateType, m.RouteBy)
	def(&m.Sequence, "")
	def(&m.Headers, "")
	def(&m.TopicRegex, DefaultTopicRegex)
	def(&m.TopicReplacement, DefaultTopicReplacement)
	def(&m.PollPosition, "")
	def(&m.PollTxID, "")

	if m.Table == "" {
		return m, invalid("%s is required: the table to read, as table or schema.table", KeyTable)
	}
	if _, _, err := splitTable(m.Table); err != nil {
		return m, err
	}
	for _, c := range []struct{ key, name string }{
		{KeyEventID, m.EventID}, {KeyEventKey, m.EventKey}, {KeyEventType, m.EventType},
		{KeyPayload, m.Payload}, {KeyTimestamp, m.Timestamp}, {KeyRouteBy, m.RouteBy},
		{KeyAggregateType, m.AggregateType}, {KeySequence, m.Sequence}, {KeyHeaders, m.Headers},
		{KeyPollPosition, m.PollPosition}, {KeyPollTxID, m.PollTxID},
	} {
		if c.name != "" {
			if err := checkName(c.key, c.name); err != nil {
				return m, err
			}
		}
	}
	if m.RouteBy != m.AggregateType && m.RouteBy != m.EventType {
		return m, invalid("%s %q must be the aggregate type column (%s, %q) or the event type column (%s, %q): "+
			"the publisher routes by one of those", KeyRouteBy, m.RouteBy, KeyAggregateType, m.AggregateType, KeyEventType, m.EventType)
	}
	if m.TopicRegex != DefaultTopicRegex {
		return m, unsupported("%s %q: only the default %q is supported; name the topic with %s", KeyTopicRegex, m.TopicRegex, DefaultTopicRegex, KeyTopicReplacement)
	}
	if err := checkReplacement(m.TopicReplacement); err != nil {
		return m, err
	}
	headers, envelope := map[string]bool{}, map[string]bool{}
	for i := range m.Additional {
		a := &m.Additional[i]
		a.Column, a.Alias = strings.TrimSpace(a.Column), strings.TrimSpace(a.Alias)
		a.Placement = Placement(strings.ToLower(strings.TrimSpace(string(a.Placement))))
		if err := checkName(KeyAdditional, a.Column); err != nil {
			return m, err
		}
		if a.Alias == "" {
			a.Alias = a.Column
		}
		if strings.ContainsAny(a.Alias, ",:") || !utf8.ValidString(a.Alias) || strings.ContainsRune(a.Alias, 0) {
			return m, invalid("%s: alias %q of column %q must be valid UTF-8 without ',', ':' or NUL", KeyAdditional, a.Alias, a.Column)
		}
		switch a.Placement {
		case Header:
			if col, reserved := m.reservedHeader(a.Alias); reserved && col != a.Column {
				if a.Alias == outbox.HeaderSequence && m.Sequence == "" {
					return m, invalid("%s: header %q is set by outbox from the sequence column: set %s=%s instead",
						KeyAdditional, a.Alias, KeySequence, a.Column)
				}
				return m, invalid("%s: header %q is one outbox sets itself, from column %q; it cannot also carry column %q",
					KeyAdditional, a.Alias, col, a.Column)
			}
			if headers[a.Alias] {
				return m, invalid("%s: header %q is placed twice", KeyAdditional, a.Alias)
			}
			headers[a.Alias] = true
		case Envelope:
			if a.Alias == "payload" {
				return m, invalid("%s: envelope field %q is the payload's own", KeyAdditional, a.Alias)
			}
			if envelope[a.Alias] {
				return m, invalid("%s: envelope field %q is placed twice", KeyAdditional, a.Alias)
			}
			envelope[a.Alias] = true
		case "partition":
			return m, unsupported("%s: %s:partition: records are partitioned by their key, the aggregate id, "+
				"which keeps each aggregate in order", KeyAdditional, a.Column)
		default:
			return m, invalid("%s: placement %q of column %q must be header or envelope", KeyAdditional, a.Placement, a.Column)
		}
	}
	return m, nil
}

// reservedHeader reports whether the publisher sets header name from the
// row itself, and from which column ("" for the sequence header without a
// sequence column: it is 0 then).
func (m Mapping) reservedHeader(name string) (column string, reserved bool) {
	switch name {
	case outbox.HeaderID:
		return m.EventID, true
	case outbox.HeaderType:
		return m.EventType, true
	case outbox.HeaderAggregateType:
		return m.AggregateType, true
	case outbox.HeaderAggregateID:
		return m.EventKey, true
	case outbox.HeaderSequence:
		return m.Sequence, true
	}
	return "", false
}

// SchemaTable splits Table into its schema ("" when unqualified) and
// name.
func (m Mapping) SchemaTable() (schema, table string) {
	schema, table, _ = splitTable(m.Table)
	return schema, table
}

func splitTable(s string) (schema, table string, err error) {
	parts := strings.Split(s, ".")
	switch len(parts) {
	case 1:
		table = parts[0]
	case 2:
		schema, table = parts[0], parts[1]
	default:
		return "", "", invalid("%s %q must be table or schema.table", KeyTable, s)
	}
	if schema != "" || len(parts) == 2 {
		if err := checkName(KeyTable, schema); err != nil {
			return "", "", err
		}
	}
	if err := checkName(KeyTable, table); err != nil {
		return "", "", err
	}
	return schema, table, nil
}

// checkName accepts what both databases accept as a quoted identifier.
func checkName(key, name string) error {
	switch {
	case name == "":
		return invalid("%s: a name is empty", key)
	case len(name) > 63:
		return invalid("%s: name %q is longer than 63 bytes", key, name)
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return invalid("%s: name %q must be valid UTF-8 without NUL", key, name)
	case strings.ContainsAny(name, ",:"):
		return invalid("%s: name %q must not contain ',' or ':'", key, name)
	}
	return nil
}

// checkReplacement accepts literal topic characters and ${routedByValue}:
// whatever else Java's replacement syntax allows either names a group the
// default regex does not have or is not a legal topic character.
func checkReplacement(r string) error {
	rest := strings.ReplaceAll(r, RoutedByValue, "")
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid("%s %q: only %s and the characters Kafka allows in a topic name ([a-zA-Z0-9._-]) may appear", KeyTopicReplacement, r, RoutedByValue)
		}
	}
	if len(r) > 249 {
		return invalid("%s %q is longer than a topic name may be", KeyTopicReplacement, r)
	}
	return nil
}

// TopicTemplate is the publisher's topic template (kafka.Config's
// TopicTemplate) for this mapping's routing: route.topic.replacement with
// ${routedByValue} made {aggregatetype} or {type}, whichever column
// route.by.field names. m must be normalized.
func (m Mapping) TopicTemplate() string {
	v := "{aggregatetype}"
	if m.RouteBy != m.AggregateType {
		v = "{type}"
	}
	return strings.ReplaceAll(m.TopicReplacement, RoutedByValue, v)
}

// Keys renders m as configuration keys, every one Normalize fills in
// included: Parse(m.Keys()) gives m back.
func (m Mapping) Keys() map[string]string {
	out := map[string]string{
		KeyTable: m.Table, KeyEventID: m.EventID, KeyEventKey: m.EventKey, KeyEventType: m.EventType,
		KeyPayload: m.Payload, KeyRouteBy: m.RouteBy, KeyAggregateType: m.AggregateType,
		KeyTopicRegex: m.TopicRegex, KeyTopicReplacement: m.TopicReplacement,
		KeyTombstone: strconv.FormatBool(m.TombstoneOnEmptyPayload), KeyExpandJSONPayload: strconv.FormatBool(m.ExpandJSONPayload),
		KeyAdditionalMissing: "error",
	}
	if m.IgnoreMissingAdditional {
		out[KeyAdditionalMissing] = "ignore"
	}
	for k, v := range map[string]string{KeyTimestamp: m.Timestamp, KeySequence: m.Sequence, KeyHeaders: m.Headers,
		KeyPollPosition: m.PollPosition, KeyPollTxID: m.PollTxID} {
		if v != "" {
			out[k] = v
		}
	}
	if len(m.Additional) > 0 {
		parts := make([]string, len(m.Additional))
		for i, a := range m.Additional {
			parts[i] = a.Column + ":" + string(a.Placement)
			if a.Alias != "" && a.Alias != a.Column {
				parts[i] += ":" + a.Alias
			}
		}
		out[KeyAdditional] = strings.Join(parts, ",")
	}
	return out
}

// Parse reads a mapping from Debezium-style keys (see Options), as the
// command line, the environment and the configuration file give them,
// and normalizes it. An unknown key is an error, so a misspelt one is not
// silently a default.
func Parse(keys map[string]string) (Mapping, error) {
	var m Mapping
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		v := strings.TrimSpace(keys[k])
		var err error
		switch k {
		case KeyTable:
			m.Table = v
		case KeyEventID:
			m.EventID = v
		case KeyEventKey:
			m.EventKey = v
		case KeyEventType:
			m.EventType = v
		case KeyPayload:
			m.Payload = v
		case KeyTimestamp:
			m.Timestamp = v
		case KeyAggregateType:
			m.AggregateType = v
		case KeySequence:
			m.Sequence = v
		case KeyHeaders:
			m.Headers = v
		case KeyRouteBy:
			m.RouteBy = v
		case KeyTopicRegex:
			m.TopicRegex = v
		case KeyTopicReplacement:
			m.TopicReplacement = v
		case KeyPollPosition:
			m.PollPosition = v
		case KeyPollTxID:
			m.PollTxID = v
		case KeyTombstone:
			m.TombstoneOnEmptyPayload, err = parseBool(k, v)
		case KeyExpandJSONPayload:
			m.ExpandJSONPayload, err = parseBool(k, v)
		case KeyAdditional:
			m.Additional, err = parseAdditional(v)
		case KeyAdditionalMissing:
			switch strings.ToLower(v) {
			case "", "error":
				m.IgnoreMissingAdditional = false
			case "ignore":
				m.IgnoreMissingAdditional = true
			default:
				err = invalid("%s %q must be error or ignore", k, v)
			}
		case KeyInvalidOperation:
			// Updates never reach the relay (CDC publishes inserts
			// only; polling reads a row once), which is Debezium's
			// default, warn, without the warning.
			if l := strings.ToLower(v); l != "" && l != "warn" {
				err = unsupported("%s %q: the relay never sees updates of outbox rows, so it cannot report or stop on them; only warn is accepted", k, v)
			}
		case KeyJSONNullBehavior:
			err = oneOf(k, v, "ignore", "optional_bytes")
		case KeyJSONEmptyArray:
			err = oneOf(k, v, "ignore", "optional_string")
		case KeyTracingContextField, KeyTracingOperationName:
		case KeyTracingContextOnly:
			_, err = parseBool(k, v)
		case KeySchemaVersion:
			if v != "" {
				err = unsupported("%s: Kafka Connect schema versions have no place in records that carry the payload's bytes", k)
			}
		case "type":
			// A Kafka Connect transform's own class, left in when its
			// "transforms.<name>." prefix was stripped.
			if v != "io.debezium.transforms.outbox.EventRouter" {
				err = invalid("unknown key %q", k)
			}
		default:
			hint := ""
			if strings.HasPrefix(k, "transforms.") {
				hint = " (drop the \"transforms.<name>.\" prefix of a Kafka Connect configuration)"
			}
			err = invalid("unknown key %q%s", k, hint)
		}
		if err != nil {
			return Mapping{}, err
		}
	}
	return m.Normalize()
}

func parseBool(key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, invalid("%s %q must be true or false", key, v)
}

func oneOf(key, v string, allowed ...string) error {
	if v == "" || slices.Contains(allowed, strings.ToLower(v)) {
		return nil
	}
	return invalid("%s %q must be one of %s", key, v, strings.Join(allowed, ", "))
}

// parseAdditional reads Debezium's "column:placement[:alias],..." list.
func parseAdditional(v string) ([]Additional, error) {
	if v == "" {
		return nil, nil
	}
	var out []Additional
	for entry := range strings.SplitSeq(v, ",") {
		parts := strings.Split(entry, ":")
		if len(parts) != 2 && len(parts) != 3 {
			return nil, invalid("%s: %q must be column:placement or column:placement:alias", KeyAdditional, strings.TrimSpace(entry))
		}
		a := Additional{Column: strings.TrimSpace(parts[0]), Placement: Placement(strings.ToLower(strings.TrimSpace(parts[1])))}
		if len(parts) == 3 {
			a.Alias = strings.TrimSpace(parts[2])
			if a.Alias == "" {
				return nil, invalid("%s: %q has an empty alias", KeyAdditional, strings.TrimSpace(entry))
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("mapping: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("mapping: %w: %w: %s", ErrInvalid, ErrUnsupported, fmt.Sprintf(format, args...))
}
