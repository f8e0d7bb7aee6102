package outbox

import (
	"context"
	"errors"
)

// The ports: what the relay needs of a source, a publisher and a
// dead-letter store, declared beside the message they carry (as Watermill
// keeps Publisher and Subscriber beside Message). An adapter imports this
// package and its driver, never the engine.

// Position is a source's opaque, durable place in its stream.
type Position string

// Record is a message and where it sits in the source.
type Record struct {
	Message  Message
	Position Position
	// Err, when set, says the source could not decode the row: Message
	// holds what could be read (its id and aggregate when known, the raw
	// row as its payload). The relay does not publish it: it dead-letters
	// it with Err as the reason, parking its aggregate, so a bad row is
	// neither lost silently nor a reason to stop every other one.
	Err error
}

// Source produces cursors that start at the last committed position.
type Source interface {
	Open(ctx context.Context) (Cursor, error)
}

// Cursor reads a source in commit order.
type Cursor interface {
	// Next returns up to max records after those already returned. It
	// blocks until at least one is available or ctx ends; it may also
	// return none when its own wait ends, which the relay treats as idle.
	Next(ctx context.Context, max int) ([]Record, error)
	// Commit durably records that every record up to and including pos has
	// been handled. A cursor opened later starts after pos.
	Commit(ctx context.Context, pos Position) error
	Close() error
}

// Publisher sends one message to the broker and returns once the broker
// acknowledged it. Errors are classified with IsPermanent.
type Publisher interface {
	Publish(ctx context.Context, m Message) error
}

// BatchPublisher is an optional capability of a Publisher: consecutive
// messages of one aggregate, in order, in one call, so an aggregate with a
// backlog is not one broker round trip per message. The broker
// acknowledges a prefix: msgs[:acked] are durable, and err (nil only when
// acked == len(msgs)) is why msgs[acked] is not. No message after
// msgs[acked] may end up in the log ahead of it: a later attempt that
// publishes msgs[acked] first keeps the aggregate's order.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, msgs []Message) (acked int, err error)
}

// RunsPublisher is an optional capability of a BatchPublisher: runs of
// several aggregates, each as PublishBatch would send it, in one call, so
// a backlog spread over many aggregates is not one wait per message.
// PublishRuns fills results[i] for runs[i]; the runs are independent, and
// each one's acknowledged prefix and error mean what PublishBatch's do.
// It may return before a run's outcome is known, so that one slow run
// does not hold the others' answers: that run's error is ErrInFlight. It
// does so only when another run of the same call has its outcome, never
// in a call of one run.
type RunsPublisher interface {
	PublishRuns(ctx context.Context, runs [][]Message, results []RunResult)
}

// ErrInFlight is a RunsPublisher's answer for a run sent and not yet
// acknowledged or refused when the call returned. Publishing its messages
// again waits for the records already sent instead of sending them twice.
// It is not a failed attempt.
var ErrInFlight = errors.New("outbox: still in flight")

// RunResult is the outcome of one run of PublishRuns: Acked messages from
// the first are durable, and Err (nil only when the whole run is) is why
// the next one is not.
type RunResult struct {
	Acked int
	Err   error
}

// Fencer is an optional capability of a Cursor: Fence says, before each
// publish attempt, whether this relay may still publish (a source read
// under a lease, say, whose lease was lost). An error stops publishing at
// once: the record in hand stays unacknowledged for whoever takes over,
// and Serve returns the error.
type Fencer interface {
	Fence() error
}

// BrokerWatcher is an optional capability of a Publisher: the broker's
// reachability as the client sees it, apart from any publish. WatchBroker
// calls fn with the current state, then on every change: a non-nil error
// when the broker stopped answering (every connection refused), nil when
// it answers again; stop ends the watch. The relay opens its breaker on
// the first, even while publishes wait on a broker that cannot answer, and
// closes it on the second, so delivery resumes without waiting out the
// breaker's open timeout.
type BrokerWatcher interface {
	WatchBroker(fn func(err error)) (stop func())
}

// DeadLetterStore holds messages the relay could not publish and the
// aggregates parked behind them. The relay is its only writer of dead
// letters; operators only request actions (see ActionRequester).
type DeadLetterStore interface {
	// AddDeadLetter stores dl as parked and parks its aggregate. Adding a
	// message whose event id is already parked returns the existing entry,
	// so a relay that re-reads after a crash does not duplicate it.
	AddDeadLetter(ctx context.Context, dl DeadLetter) (DeadLetter, error)
	// ParkedAggregates lists parked aggregates with any pending action.
	ParkedAggregates(ctx context.Context) ([]ParkedAggregate, error)
	// ParkedMessages lists an aggregate's parked entries in order.
	ParkedMessages(ctx context.Context, key AggregateKey) ([]DeadLetter, error)
	// ResolveDeadLetter marks one entry replayed or skipped.
	ResolveDeadLetter(ctx context.Context, id int64, status DeadLetterStatus, note string) error
	// CompleteAction clears the aggregate's pending action and unparks it
	// when no parked entry remains.
	CompleteAction(ctx context.Context, key AggregateKey) error
	// FailAction clears the pending action, keeps the aggregate parked and
	// charges the failed entry one more replay and failure.
	FailAction(ctx context.Context, key AggregateKey, entryID int64, cause string) error
}

// ActionRequester is the operator's side of the dead-letter store.
type ActionRequester interface {
	ParkedMessages(ctx context.Context, key AggregateKey) ([]DeadLetter, error)
	// RequestAction records a pending replay or skip on a parked
	// aggregate, with the entry it names, replacing any request pending.
	// It fails with ErrNotParked when the aggregate is not parked.
	RequestAction(ctx context.Context, key AggregateKey, req ActionRequest) error
}

// ErrNotParked is returned by stores when an action names an aggregate
// that is not parked.
var ErrNotParked = errors.New("aggregate is not parked")

// ErrNotFound is returned by stores for an unknown dead-letter id.
var ErrNotFound = errors.New("not found")
