// Package wm holds what the Watermill peer's writer (in the driver) and its
// forwarder process must agree on: the SQL schema, the forwarder topic and
// the metadata key that carries the Kafka partition key.
package wm

import (
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// ForwarderTopic is the SQL topic (table watermill_outbox) that writers
// publish enveloped events to inside their transaction and the forwarder
// reads from.
const ForwarderTopic = "outbox"

// KeyMetadata is the message metadata the forwarder's Kafka marshaler
// turns into the record key: the aggregate id, so that one aggregate's
// events share a partition and keep their order.
const KeyMetadata = "aggregate_id"

// Schema is watermill-sql's default PostgreSQL schema (one table per topic,
// offsets per consumer group, transaction_id xid8 so that the subscriber
// never skips a row committed late). Its batch size is the default (100).
func Schema() wsql.SchemaAdapter { return wsql.DefaultPostgreSQLSchema{} }

// Offsets is the matching default offsets adapter.
func Offsets() wsql.OffsetsAdapter { return wsql.DefaultPostgreSQLOffsetsAdapter{} }
