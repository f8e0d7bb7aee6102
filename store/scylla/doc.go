// Package scylla is the ScyllaDB store: orders written by lightweight
// transactions with their event as a write-ahead intent, outbox rows, and
// a relay source that reads the outbox table's CDC log with
// scylla-cdc-go.
//
// Writes: every write of an order row is a lightweight transaction, and
// each outbox row is written at the timestamp of its order's latest one,
// so an order's events reach the CDC log in order whatever the clocks of
// the instances that wrote them; a write that times out is retried until
// its outcome is known and answered order.ErrUnavailable when it stays
// unknown, and its note has the sweeper finish it. Write consistencies
// the reader's LOCAL_QUORUM may not see are refused.
//
// Reading: the outbox table is partitioned by aggregate and clustered by
// (sequence, event_time), so an aggregate's events share one CDC stream
// in sequence order. The consumer never returns an error to the library
// for one row (that would stop the whole reader): a row it cannot decode
// goes to the relay to be dead-lettered. Progress is reported per stream
// only after the broker acknowledged every row of a change, at most once
// a second while a stream is busy (an idle stream's moves to the end of
// empty reads, never back); a generation change waits until the old
// generation's rows are acknowledged; a first start reads the log from
// its oldest change (at least a minute back, for writes in flight), or
// an explicit point, and says what it passes over;
// and one relay per table holds a lease, fenced by an epoch checked on
// every progress write, and stops handing out rows the moment it is lost.
package scylla
