// Package health runs periodic checks (store, broker, relay, breaker) and
// keeps their last results for /readyz and /status. A failing or
// panicking check is logged and the checker carries on: the design's
// Resume policy.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// Check is one named probe. Critical checks decide readiness.
type Check struct {
	Name     string
	Critical bool
	Run      func(ctx context.Context) error
}

// Result is a check's last outcome.
type Result struct {
	OK        bool      `json:"ok"`
	Critical  bool      `json:"critical"`
	Error     string    `json:"error,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
}

// Checker runs checks every interval.
type Checker struct {
	checks   []Check
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	results map[string]Result
}

// Config configures a Checker. The zero value checks every 5 s and logs
// nothing.
type Config struct {
	// Interval between rounds of checks (default 5 s). Each check is
	// bounded by the smaller of Interval and 2 s.
	Interval time.Duration
	Logger   *slog.Logger
}

// New builds a checker.
func New(cfg Config, checks ...Check) *Checker {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{checks: checks, interval: cfg.Interval, timeout: min(cfg.Interval, 2*time.Second), log: cfg.Logger, results: map[string]Result{}}
}

// startupGrace lets sibling workers start before the first round, so the
// first report is not a false alarm.
const startupGrace = 500 * time.Millisecond

// Serve runs the checks shortly after start and then every interval until
// ctx ends.
func (c *Checker) Serve(ctx context.Context) error {
	next := time.NewTimer(min(startupGrace, c.interval))
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-next.C:
		}
		c.RunOnce(ctx)
		next.Reset(c.interval)
	}
}

// RunOnce runs every check once.
func (c *Checker) RunOnce(ctx context.Context) {
	for _, ch := range c.checks {
		err := c.run(ctx, ch)
		r := Result{OK: err == nil, Critical: ch.Critical, CheckedAt: time.Now().UTC()}
		if err != nil {
			r.Error = err.Error()
		}
		c.mu.Lock()
		prev, seen := c.results[ch.Name]
		c.results[ch.Name] = r
		c.mu.Unlock()
		if err != nil && (!seen || prev.OK) {
			c.log.Warn("health check failing", "check", ch.Name, "err", err)
		} else if err == nil && seen && !prev.OK {
			c.log.Info("health check recovered", "check", ch.Name)
		}
	}
}

func (c *Checker) run(ctx context.Context, ch Check) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return ch.Run(ctx)
}

// Report returns the last results by check name.
func (c *Checker) Report() map[string]Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.results)
}

// Ready reports whether every critical check has run and passed.
func (c *Checker) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.checks {
		if r, ok := c.results[ch.Name]; ch.Critical && (!ok || !r.OK) {
			return false
		}
	}
	return true
}
