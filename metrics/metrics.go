// Package metrics turns relay hooks and supervisor events into Prometheus
// metrics. The relay itself imports no metrics library: it calls hooks,
// and Metrics implements them.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// Metrics holds the collectors. Register them once with New.
type Metrics struct {
	published    prometheus.Counter
	retried      prometheus.Counter
	failedRounds prometheus.Counter
	deadLettered *prometheus.CounterVec
	parked       prometheus.Gauge
	breakerState prometheus.Gauge
	transitions  *prometheus.CounterVec
	lagEvents    prometheus.Gauge
	lagSeconds   prometheus.Gauge
	latency      prometheus.Histogram
	restarts     *prometheus.CounterVec
	alerts       *prometheus.CounterVec
	slotLag      prometheus.Gauge
	cdcLag       prometheus.Gauge
	cdcTTL       prometheus.Gauge
	stuck        prometheus.Gauge
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	// The slot and CDC gauges are registered on their first value: a
	// store without a replication slot or a CDC log exports none.
	reg      prometheus.Registerer
	slotOnce sync.Once
	cdcOnce  sync.Once
}

var (
	_ relay.PublishHook    = (*Metrics)(nil)
	_ relay.RetryHook      = (*Metrics)(nil)
	_ relay.FailHook       = (*Metrics)(nil)
	_ relay.DeadLetterHook = (*Metrics)(nil)
	_ relay.ParkHook       = (*Metrics)(nil)
	_ relay.BreakerHook    = (*Metrics)(nil)
	_ relay.CheckpointHook = (*Metrics)(nil)
	_ relay.StuckHook      = (*Metrics)(nil)
)

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{
		reg:          reg,
		published:    prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_published_total", Help: "Events acknowledged by the broker."}),
		retried:      prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_publish_retries_total", Help: "Failed publish attempts that were retried."}),
		failedRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_publish_failed_rounds_total", Help: "Rounds of attempts that ended on a transient error (the event waits and is tried again)."}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_dead_lettered_total", Help: "Events written to the dead-letter store, by event type."}, []string{"type"}),
		parked:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_parked_aggregates", Help: "Aggregates parked behind a dead letter."}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open."}),
		transitions:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_breaker_transitions_total", Help: "Circuit breaker transitions, by new state."}, []string{"to"}),
		lagEvents:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_lag_events", Help: "Events read but not yet checkpointed."}),
		lagSeconds:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_lag_seconds", Help: "Age of the oldest event not yet acknowledged."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "outbox_commit_to_ack_seconds", Help: "Time from the event's commit to the broker's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_worker_restarts_total", Help: "Supervised restarts, by worker."}, []string{"worker"}),
		alerts:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_alerts_total", Help: "Dead-letter alerts, by outcome."}, []string{"outcome"}),
		slotLag:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_replication_slot_lag_bytes", Help: "WAL the PostgreSQL replication slot holds behind the server's current position."}),
		cdcLag:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_cdc_lag_seconds", Help: "Age of the oldest ScyllaDB CDC change read and not yet acknowledged."}),
		cdcTTL:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_cdc_log_ttl_seconds", Help: "TTL of the ScyllaDB CDC log: changes older than this are deleted unread."}),
		stuck: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_stuck_aggregates",
			Help: "Aggregates whose event has failed at least one round of attempts and is still retried (parked after --stuck-timeout while others are published)."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outbox_http_requests_total",
			Help: "HTTP requests served, by route (the handler's pattern, or unmatched) and status code."}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "outbox_http_request_duration_seconds",
			Help: "Time to answer an HTTP request, by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.published, m.retried, m.failedRounds, m.deadLettered, m.parked,
		m.breakerState, m.transitions, m.lagEvents, m.lagSeconds, m.latency, m.restarts, m.alerts, m.stuck,
		m.httpRequests, m.httpDuration} {
		f(c)
	}
	// The total exists from the start, at 0, so that rate() and alerts on
	// it work before the first dead letter; the empty type is no event's.
	m.deadLettered.WithLabelValues("")
	return m
}

// ObserveRequest counts an HTTP request by route and status and times it.
func (m *Metrics) ObserveRequest(route string, status int, d time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(d.Seconds())
}

func (m *Metrics) OnPublish(_ outbox.Message, _ int, sinceCommit time.Duration) {
	m.published.Inc()
	m.latency.Observe(sinceCommit.Seconds())
}
func (m *Metrics) OnRetry(outbox.Message, retry.Attempt)      { m.retried.Inc() }
func (m *Metrics) OnPublishFailed(outbox.Message, int, error) { m.failedRounds.Inc() }
func (m *Metrics) OnDeadLetter(dl outbox.DeadLetter) {
	m.deadLettered.WithLabelValues(dl.Message.Type).Inc()
}
func (m *Metrics) OnStuck(outbox.AggregateKey)                   { m.stuck.Inc() }
func (m *Metrics) OnUnstuck(outbox.AggregateKey)                 { m.stuck.Dec() }
func (m *Metrics) OnPark(outbox.AggregateKey)                    { m.parked.Inc() }
func (m *Metrics) OnUnpark(outbox.AggregateKey)                  { m.parked.Dec() }
func (m *Metrics) OnCheckpoint(_ outbox.Position, lag relay.Lag) { m.setLag(lag) }
func (m *Metrics) setLag(lag relay.Lag) {
	m.lagEvents.Set(float64(lag.Events))
	m.lagSeconds.Set(lag.Age.Seconds())
}

func (m *Metrics) OnBreakerStateChange(_, to breaker.State) {
	m.breakerState.Set(float64(to))
	m.transitions.WithLabelValues(to.String()).Inc()
}

// SetParked sets the parked gauge, at start-up from the store.
func (m *Metrics) SetParked(n int) { m.parked.Set(float64(n)) }

// Restarted counts a supervised restart of worker.
func (m *Metrics) Restarted(worker string) { m.restarts.WithLabelValues(worker).Inc() }

// Alert counts a dead-letter alert by outcome (sent, failed, dropped).
func (m *Metrics) Alert(outcome string) { m.alerts.WithLabelValues(outcome).Inc() }

// SetCDCLag records the CDC reader's lag and its log's TTL.
func (m *Metrics) SetCDCLag(lag, ttl time.Duration) {
	m.cdcOnce.Do(func() { m.reg.MustRegister(m.cdcLag, m.cdcTTL) })
	m.cdcLag.Set(lag.Seconds())
	m.cdcTTL.Set(ttl.Seconds())
}

// SetSlotLag records the replication slot's lag in bytes.
func (m *Metrics) SetSlotLag(bytes int64) {
	m.slotOnce.Do(func() { m.reg.MustRegister(m.slotLag) })
	m.slotLag.Set(float64(bytes))
}
