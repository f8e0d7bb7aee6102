// Package scylla is the ScyllaDB store: the order row and its outbox row
// in one LOGGED BATCH, and a relay source that reads the outbox table's
// CDC log with scylla-cdc-go.
//
// The outbox table is partitioned by aggregate and clustered by
// (sequence, event_time), so an aggregate's events share one CDC stream
// and keep their sequence order, even inside one LOGGED BATCH. The
// consumer never returns an error to the library for one message (that
// would stop the whole reader); progress is reported per stream only
// after the broker acknowledged every row of a change (an idle stream's
// moves to the end of empty reads, never back); a generation change
// waits until the old generation's events are acknowledged; a first
// start reads the log from its oldest change; and one relay per table
// holds a lease, fenced by an epoch checked on every progress write.
package scylla
