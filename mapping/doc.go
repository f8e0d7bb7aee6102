// Package mapping says how the relay reads an outbox table that is not its
// own: which table, and which of its columns hold each part of an event.
// Its configuration keys and defaults are those of Debezium's outbox
// EventRouter (table.field.event.id, table.field.event.key,
// route.by.field, route.topic.replacement, ...), so a Debezium
// configuration moves over as it is; the few keys Debezium has no need of
// (the table, a sequence column, the polling order) are outbox's own.
//
// A Mapping is built from a Go struct or parsed from those keys (Parse),
// and checked once, when the relay starts, against the table's columns as
// the database reports them (Mapping.Resolve): a missing column or one of
// the wrong type is an error naming the table, the column and the key.
// The resulting Plan decodes a row, given as its columns' text forms, into
// an outbox.Message without looking any column up by name.
//
// What reaches Kafka is the payload column's bytes as they are: JSON and
// text as their text, bytes as the bytes themselves. The key is the
// aggregate id's text; the headers are outbox's own (id, type,
// aggregatetype, aggregateid, sequence) plus the columns placed as headers,
// by their text.
//
// The package does no I/O: the stores (store/postgres, store/sqlite)
// describe their columns to it and feed it rows.
package mapping
