// Package relay moves outbox messages from a Source to a Publisher.
//
// Guarantees, and why they hold:
//   - Per-aggregate order: each aggregate has one lane, and a lane has at
//     most one message in flight. Different aggregates run in parallel on a
//     pool of workers.
//   - At-least-once: the checkpoint (Cursor.Commit) only ever moves past a
//     contiguous prefix of records that were acknowledged by the broker or
//     written to the dead-letter store. A crash re-reads from there.
//   - Transient failures are back-pressure, never dead letters: after a
//     round of retries the message waits for the circuit breaker and is
//     tried again; while the breaker is open the relay reads nothing.
//   - Permanent failures park the aggregate: the message and every later
//     message of that aggregate go to the dead-letter store, in order, until
//     an operator replays or skips it. Replay and skip run inside the
//     aggregate's lane, so they cannot race the aggregate's new messages.
package relay
