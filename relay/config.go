package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/retry"
)

// Config holds the relay's knobs. Its zero value works.
type Config struct {
	// Retry is the schedule of one round of attempts (default: the design's
	// 0, 100, 200, 400, 500 ms). After a transient round the message waits
	// for the breaker and starts a new round; it is never dead-lettered.
	Retry retry.Policy
	// Breaker guards the broker (default: 5 failures, 30 s, 3 successes).
	Breaker breaker.Config
	// Workers is how many lanes, or groups of lanes, publish at once
	// (default 256), besides one group the reader publishes itself while
	// nothing else does; a lane taken out of its group to be retried or
	// dead-lettered runs on its own (see DESIGN.md).
	Workers int
	// MaxInFlight bounds records read but not yet acknowledged or
	// dead-lettered; reading stops at the bound (default 1024: four per
	// worker, and little reading wasted while the broker does not answer).
	MaxInFlight int
	// MaxBehind bounds the records read from the oldest unsettled one on
	// (default 64 × MaxInFlight). Normally that is the window itself; while
	// one aggregate is stuck, the others flow past it and are published,
	// but the checkpoint cannot pass it, so a crash would publish them all
	// again. MaxBehind caps that: past it, reading waits until the stuck
	// record settles or is parked (StuckTimeout).
	MaxBehind int
	// MaxRun bounds how many consecutive messages of one aggregate are
	// published in one call, when the publisher takes runs
	// (outbox.BatchPublisher): an aggregate with a backlog is not one
	// broker round trip per message (default 256; 1: one at a time).
	MaxRun int
	// BatchSize bounds the records asked of the source at once (default 512).
	BatchSize int
	// PublishTimeout bounds one publish attempt (default 10 s).
	PublishTimeout time.Duration
	// CommitInterval is how often the checkpoint is written (default 50 ms).
	CommitInterval time.Duration
	// ActionPollInterval is how often operator requests are looked for
	// (default 1 s); Relay.Poke looks at once.
	ActionPollInterval time.Duration
	// StuckTimeout is how long a message may fail transiently, round after
	// round, while the broker acknowledges other aggregates' messages,
	// before it is parked in the dead-letter store with ErrStuck (default
	// 5 min; negative: never). Until then it holds the checkpoint (and on
	// PostgreSQL the WAL), though not the other aggregates. An outage, in
	// which nothing is acknowledged, never parks anything.
	StuckTimeout time.Duration
	// DrainTimeout bounds how long in-flight publishes may finish after
	// Serve's context ends (default 5 s).
	DrainTimeout time.Duration
	// Hooks receive events; each may implement any of the *Hook interfaces.
	Hooks  []Hook
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	c.Retry = c.Retry.WithDefaults()
	if c.Workers == 0 {
		c.Workers = 256
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1024
	}
	if c.MaxBehind == 0 {
		c.MaxBehind = 64 * c.MaxInFlight
	}
	if c.BatchSize == 0 {
		c.BatchSize = 512
	}
	if c.MaxRun == 0 {
		c.MaxRun = 256
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 50 * time.Millisecond
	}
	if c.ActionPollInterval == 0 {
		c.ActionPollInterval = time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 5 * time.Second
	}
	if c.StuckTimeout == 0 {
		c.StuckTimeout = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("relay: invalid config")

// Validate names the first field that is out of range. Zero means default.
func (c Config) Validate() error {
	if c.Retry != (retry.Policy{}) {
		if err := c.Retry.Validate(); err != nil {
			return fmt.Errorf("%w: Retry: %w", ErrInvalidConfig, err)
		}
	}
	if err := c.Breaker.Validate(); err != nil {
		return fmt.Errorf("%w: Breaker: %w", ErrInvalidConfig, err)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"Workers", c.Workers}, {"MaxInFlight", c.MaxInFlight}, {"MaxBehind", c.MaxBehind}, {"BatchSize", c.BatchSize}, {"MaxRun", c.MaxRun}} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s must not be negative, got %d", ErrInvalidConfig, f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"PublishTimeout", c.PublishTimeout}, {"CommitInterval", c.CommitInterval},
		{"ActionPollInterval", c.ActionPollInterval}, {"DrainTimeout", c.DrainTimeout},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s must not be negative, got %s", ErrInvalidConfig, f.name, f.v)
		}
	}
	if c.MaxBehind != 0 && c.MaxBehind < max(c.MaxInFlight, 1) {
		return fmt.Errorf("%w: MaxBehind %d must be at least MaxInFlight (%d)", ErrInvalidConfig, c.MaxBehind, c.MaxInFlight)
	}
	return nil
}
