package relay

import (
	"sync/atomic"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
)

type counters struct {
	read, published, retried, failed, deadLettered, parked atomic.Int64
	lagEvents                                              atomic.Int64
	lagAge                                                 atomic.Int64
	inFlight, peakInFlight                                 atomic.Int64
}

// notePeak records how many records are in the window now.
func (c *counters) notePeak(n int) {
	c.inFlight.Store(int64(n))
	for {
		p := c.peakInFlight.Load()
		if int64(n) <= p || c.peakInFlight.CompareAndSwap(p, int64(n)) {
			return
		}
	}
}

func (c *counters) setLag(l Lag) {
	c.lagEvents.Store(int64(l.Events))
	c.lagAge.Store(int64(l.Age))
}

// Stats is a snapshot of the relay's counters since it was built.
type Stats struct {
	Read         int64         `json:"read"`
	Published    int64         `json:"published"`
	Retried      int64         `json:"retried"`
	Failed       int64         `json:"failed_rounds"`
	DeadLettered int64         `json:"dead_lettered"`
	Parked       int64         `json:"parked_aggregates"`
	Breaker      string        `json:"breaker"`
	Active       bool          `json:"active"`
	LagEvents    int64         `json:"lag_events"`
	LagAge       time.Duration `json:"lag_age_ns"`
	// InFlight is how many records are read and not yet settled.
	InFlight int64 `json:"in_flight"`
	// PeakInFlight is the most records ever read and not yet settled at
	// once; it never exceeds Config.MaxInFlight.
	PeakInFlight int64 `json:"peak_in_flight"`
	// Stuck lists aggregates whose message failed an attempt and is
	// still being retried.
	Stuck []StuckAggregate `json:"stuck"`
}

// StuckAggregate is an aggregate whose message has failed an attempt and
// is still being retried. Past Config.StuckTimeout from its first attempt,
// while other aggregates are published, it is parked with ErrStuck.
type StuckAggregate struct {
	Aggregate   outbox.AggregateKey `json:"aggregate"`
	EventID     string              `json:"event_id"`
	Since       time.Time           `json:"since"`
	LastFailure time.Time           `json:"last_failure"`
	Attempts    int                 `json:"attempts"`
	Error       string              `json:"error"`
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	return Stats{
		Read:         r.stats.read.Load(),
		Published:    r.stats.published.Load(),
		Retried:      r.stats.retried.Load(),
		Failed:       r.stats.failed.Load(),
		DeadLettered: r.stats.deadLettered.Load(),
		Parked:       r.stats.parked.Load(),
		Breaker:      r.br.State().String(),
		Active:       r.Active(),
		LagEvents:    r.stats.lagEvents.Load(),
		LagAge:       time.Duration(r.stats.lagAge.Load()),
		InFlight:     r.stats.inFlight.Load(),
		PeakInFlight: r.stats.peakInFlight.Load(),
		Stuck:        r.Stuck(),
	}
}

// BreakerState reports the breaker's state.
func (r *Relay) BreakerState() breaker.State { return r.br.State() }
