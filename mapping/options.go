package mapping

// Option describes one configuration key, for flags, help and the README.
type Option struct {
	Key string
	// Default is the value an absent key takes ("" when none).
	Default string
	// Debezium says whether the key is the EventRouter's; the others are
	// outbox's own.
	Debezium bool
	Doc      string
}

// Options lists every key Parse reads, in the order a reader meets them.
func Options() []Option {
	return []Option{
		{KeyTable, "", false, "the table to read, table or schema.table (required)"},
		{KeyEventID, DefaultEventID, true, "event id column: uuid, or text or 16 bytes holding one; the record's id header"},
		{KeyEventKey, DefaultEventKey, true, "aggregate id column: text, uuid or integer; the record's key"},
		{KeyEventType, DefaultEventType, true, "event type column: text; the type header"},
		{KeyPayload, DefaultPayload, true, "payload column: json, jsonb, text or bytea (SQLite TEXT or BLOB), sent as its bytes"},
		{KeyTimestamp, "", true, "timestamp column: timestamp, timestamptz, an integer since 1970 (s, ms, µs or ns by magnitude) or ISO 8601 text; none: the commit time (CDC) or the time read (polling)"},
		{KeyAggregateType, "the " + KeyRouteBy + " column", false, "aggregate type column: text; with the aggregate id, the unit of ordering and parking"},
		{KeySequence, "", false, "per-aggregate sequence column: integer; the sequence header (0 without one)"},
		{KeyHeaders, "", false, "a JSON object column of string values, each sent as a header"},
		{KeyRouteBy, DefaultRouteBy, true, "the column whose value routes the record: the aggregate type or the event type column"},
		{KeyTopicRegex, DefaultTopicRegex, true, "only the default is supported"},
		{KeyTopicReplacement, DefaultTopicReplacement, true, "the topic; " + RoutedByValue + " is the " + KeyRouteBy + " column's value"},
		{KeyAdditional, "", true, "column:header[:alias] or column:envelope[:alias], comma-separated; partition is not supported"},
		{KeyAdditionalMissing, "error", true, "error: refuse to start when an additional column is missing; ignore: drop it"},
		{KeyTombstone, "false", true, "send a NULL, empty or blank payload as a tombstone (a null value)"},
		{KeyExpandJSONPayload, "false", true, "embed a text payload holding a JSON object or array in the envelope as JSON; without envelope fields the bytes are sent as they are either way"},
		{KeyPollPosition, "position (PostgreSQL); the INTEGER PRIMARY KEY AUTOINCREMENT (SQLite)", false, "polling order: a unique integer column filled in insert order"},
		{KeyPollTxID, "txid (PostgreSQL)", false, "polling PostgreSQL: an xid8 column DEFAULT pg_current_xact_id(), the writing transaction"},
		{KeyInvalidOperation, "warn", true, "accepted: the relay never sees updates (the publication carries inserts only; polling reads a row once); error and fatal are refused"},
		{KeyJSONNullBehavior, "ignore", true, "accepted, no effect: it shapes Kafka Connect schemas, which records here do not carry"},
		{KeyJSONEmptyArray, "ignore", true, "accepted, no effect: as above"},
		{KeyTracingContextField, "tracingspancontext", true, "accepted, no effect: place a W3C traceparent column as a header instead (traceparent:header)"},
		{KeyTracingOperationName, "debezium-read", true, "accepted, no effect"},
		{KeyTracingContextOnly, "false", true, "accepted, no effect"},
		{KeySchemaVersion, "", true, "refused when set: Kafka Connect schema versions have no place in records that carry the payload's bytes"},
	}
}
