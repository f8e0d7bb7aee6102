// Package order is the order domain: commands (create, update, cancel),
// their validation and limits, and the events they emit.
//
// Every change writes the order row and exactly one outbox event in one
// transaction (through a Repository), with the order's version as the
// event's sequence. Updates are guarded by the version (optimistic
// concurrency), and creates by an optional idempotency key.
//
// Callers run commands on Service directly, concurrently: there is no
// mailbox or worker pool (the design's OrderActor). Nothing here needs a
// single writer: the version guard orders changes to one order, the
// store's transaction makes each change atomic, and the HTTP API bounds
// how many run at once.
package order
