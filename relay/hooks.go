package relay

import (
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// Hook is any value implementing one or more of the interfaces below, so
// the relay imports no metrics or logging library of its own.
type Hook any

// PublishStartHook hears each run of an aggregate's consecutive messages
// (one, or several in order) as the relay starts publishing it, before
// its first attempt; each message then settles through PublishHook or
// DeadLetterHook, or is started again in a later run (the part of a run
// the broker did not acknowledge), or never (the relay stopped). msgs is
// the relay's own: read it during the call only.
type PublishStartHook interface {
	OnPublishStart(msgs []outbox.Message)
}

// PublishHook hears each message the broker acknowledged.
type PublishHook interface {
	OnPublish(m outbox.Message, attempts int, sinceCommit time.Duration)
}

// RetryHook hears each failed attempt that will be retried.
type RetryHook interface {
	OnRetry(m outbox.Message, a retry.Attempt)
}

// FailHook hears each round of attempts that ended on a transient error;
// the message will be tried again once the breaker allows.
type FailHook interface {
	OnPublishFailed(m outbox.Message, attempts int, err error)
}

// DeadLetterHook hears each message written to the dead-letter store.
type DeadLetterHook interface {
	OnDeadLetter(dl outbox.DeadLetter)
}

// ParkHook hears aggregates being parked and released.
type ParkHook interface {
	OnPark(k outbox.AggregateKey)
	OnUnpark(k outbox.AggregateKey)
}

// BreakerHook hears circuit breaker transitions.
type BreakerHook interface {
	OnBreakerStateChange(from, to breaker.State)
}

// StuckHook hears an aggregate start failing (its message failed an
// attempt and will be retried) and stop (the message was published,
// dead-lettered or given back at shutdown).
type StuckHook interface {
	OnStuck(k outbox.AggregateKey)
	OnUnstuck(k outbox.AggregateKey)
}

// CheckpointHook hears each checkpoint written, with the lag behind it.
type CheckpointHook interface {
	OnCheckpoint(pos Position, lag Lag)
}

// Lag is how far the relay is behind what it has read.
type Lag struct {
	// Events read but not yet checkpointed.
	Events int
	// Age of the oldest of them, from its commit time.
	Age time.Duration
}

type hooks []Hook

func (hs hooks) each(fn func(Hook)) {
	for _, h := range hs {
		fn(h)
	}
}
