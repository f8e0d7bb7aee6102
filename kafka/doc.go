// Package kafka publishes outbox messages with franz-go and runs an
// embedded Kafka-protocol broker (kfake) for the zero-configuration default.
//
// Ordering: records are keyed by aggregate id, so one topic keeps an
// aggregate's events in one partition, in order. Only a topic template
// that maps an aggregate to ONE topic (for example
// "outbox.event.{aggregatetype}", Debezium's default) gives that
// guarantee end to end. The design's one-topic-per-event-type routing
// ("{type}") spreads an aggregate over several topics; consumers of more
// than one of them restore order with the "sequence" header.
package kafka
