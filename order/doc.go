// Package order is the order domain: commands (create, update, cancel),
// their validation and limits, and the events they emit.
//
// Every change writes the order row and exactly one outbox event in one
// transaction (through a Repository), with the order's version as the
// event's sequence. Updates are guarded by the version (optimistic
// concurrency), and creates by an optional idempotency key.
package order
