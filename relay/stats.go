package relay

import (
	"sync/atomic"
	"time"

	"github.com/outbox-dev/outbox/breaker"
)

type counters struct {
	read, published, retried, failed, deadLettered, parked atomic.Int64
	lagEvents                                              atomic.Int64
	lagAge                                                 atomic.Int64
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
	LagEvents    int64         `json:"lag_events"`
	LagAge       time.Duration `json:"lag_age_ns"`
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
		LagEvents:    r.stats.lagEvents.Load(),
		LagAge:       time.Duration(r.stats.lagAge.Load()),
	}
}

// BreakerState reports the breaker's state.
func (r *Relay) BreakerState() breaker.State { return r.br.State() }
