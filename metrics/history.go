package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
)

// History keeps the last few minutes of the relay's figures in memory,
// one Sample per Record call, for the web console's charts
// (GET /status/history). It is a relay hook: it hears each publish's
// latency and each breaker transition.
type History struct {
	mu          sync.Mutex
	size        int
	samples     []Sample // oldest first, at most size
	latencies   []float64
	transitions []Transition // oldest first, at most maxTransitions
	last        *Sample
}

// Sample is the relay's figures at one moment.
type Sample struct {
	At time.Time `json:"t"`
	// Published is the relay's total; Rate the events per second since
	// the previous sample.
	Published int64   `json:"published"`
	Rate      float64 `json:"rate"`
	// LatencyP50 and LatencyMax are the commit-to-acknowledgement times
	// of the events published since the previous sample, in milliseconds
	// (0 when none were).
	LatencyP50 float64 `json:"latency_p50_ms"`
	LatencyMax float64 `json:"latency_max_ms"`
	LagEvents  int64   `json:"lag_events"`
	LagSeconds float64 `json:"lag_seconds"`
	Breaker    string  `json:"breaker"`
}

// Transition is one change of the circuit breaker's state.
type Transition struct {
	At   time.Time `json:"t"`
	From string    `json:"from"`
	To   string    `json:"to"`
}

// HistoryDoc is GET /status/history.
type HistoryDoc struct {
	Interval    float64      `json:"interval_seconds"`
	Samples     []Sample     `json:"samples"`
	Transitions []Transition `json:"breaker_transitions"`
}

const maxTransitions = 50

// maxLatencies bounds the latencies kept between two samples; past it the
// sample's figures come from the first ones.
const maxLatencies = 1 << 16

var (
	_ relay.PublishHook = (*History)(nil)
	_ relay.BreakerHook = (*History)(nil)
)

// NewHistory keeps the last size samples.
func NewHistory(size int) *History { return &History{size: max(size, 1)} }

func (h *History) OnPublish(_ outbox.Message, _ int, sinceCommit time.Duration) {
	h.mu.Lock()
	if len(h.latencies) < maxLatencies {
		h.latencies = append(h.latencies, float64(sinceCommit)/float64(time.Millisecond))
	}
	h.mu.Unlock()
}

func (h *History) OnBreakerStateChange(from, to breaker.State) {
	h.mu.Lock()
	h.transitions = append(h.transitions, Transition{At: time.Now().UTC(), From: from.String(), To: to.String()})
	if len(h.transitions) > maxTransitions {
		h.transitions = slices.Delete(h.transitions, 0, len(h.transitions)-maxTransitions)
	}
	h.mu.Unlock()
}

// Record adds a sample taken at now from the relay's stats; the rate and
// latencies are those since the previous call.
func (h *History) Record(now time.Time, st relay.Stats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Sample{At: now.UTC(), Published: st.Published, LagEvents: st.LagEvents, LagSeconds: st.LagAge.Seconds(), Breaker: st.Breaker}
	if h.last != nil {
		if dt := now.Sub(h.last.At).Seconds(); dt > 0 && st.Published >= h.last.Published {
			s.Rate = float64(st.Published-h.last.Published) / dt
		}
	}
	if n := len(h.latencies); n > 0 {
		slices.Sort(h.latencies)
		s.LatencyP50 = h.latencies[n/2]
		s.LatencyMax = h.latencies[n-1]
		h.latencies = h.latencies[:0]
	}
	h.samples = append(h.samples, s)
	if len(h.samples) > h.size {
		h.samples = slices.Delete(h.samples, 0, len(h.samples)-h.size)
	}
	h.last = &h.samples[len(h.samples)-1]
	last := *h.last
	h.last = &last
}

// Snapshot copies the samples and transitions; interval is what the
// caller records at.
func (h *History) Snapshot(interval time.Duration) HistoryDoc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HistoryDoc{Interval: interval.Seconds(), Samples: append([]Sample{}, h.samples...),
		Transitions: append([]Transition{}, h.transitions...)}
}
