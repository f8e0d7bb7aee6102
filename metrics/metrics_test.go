package metrics_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/metrics"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// series flattens what reg gathers into one value per series, keyed
// name{label="value",...}; a histogram gives name_count, name_sum and one
// name_bucket{le="..."} per bucket.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(name string, extra ...string) string {
				ls := append(slices.Clone(labels), extra...)
				if len(ls) == 0 {
					return name
				}
				return name + "{" + strings.Join(ls, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key(f.GetName())] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(f.GetName())] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[key(f.GetName()+"_count")] = float64(h.GetSampleCount())
				out[key(f.GetName()+"_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key(f.GetName()+"_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			default:
				t.Fatalf("metric %s has unexpected type %s", f.GetName(), f.GetType())
			}
		}
	}
	return out
}

// family is a series key's metric name.
func family(key string) string {
	name, _, _ := strings.Cut(key, "{")
	for _, suffix := range []string{"_count", "_sum", "_bucket"} {
		if strings.HasPrefix(name, "outbox_commit_to_ack_seconds") || strings.HasPrefix(name, "outbox_http_request_duration_seconds") {
			name = strings.TrimSuffix(name, suffix)
		}
	}
	return name
}

// Each hook or setter moves exactly its own series, by exactly what it
// says: every series a case does not name must stay at zero.
func TestEveryHookFeedsItsOwnCollector(t *testing.T) {
	msg, err := outbox.NewMessage("order", "o1", "OrderCreated", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := msg.Key()
	// 20 ms lands in the 32 ms bucket and every one above it.
	latency := map[string]float64{"outbox_commit_to_ack_seconds_count": 1, "outbox_commit_to_ack_seconds_sum": 0.02}
	for i, b := range prometheus.ExponentialBuckets(0.001, 2, 16) {
		if i >= 5 {
			latency[fmt.Sprintf("outbox_commit_to_ack_seconds_bucket{le=%q}", fmt.Sprint(b))] = 1
		}
	}
	for _, tc := range []struct {
		name string
		act  func(m *metrics.Metrics)
		want map[string]float64
	}{
		{"publish", func(m *metrics.Metrics) { m.OnPublish(msg, 1, 20*time.Millisecond) },
			merge(map[string]float64{"outbox_published_total": 1}, latency)},
		{"retry", func(m *metrics.Metrics) {
			m.OnRetry(msg, retry.Attempt{N: 1, Err: errors.New("x")})
			m.OnRetry(msg, retry.Attempt{N: 2, Err: errors.New("x")})
		}, map[string]float64{"outbox_publish_retries_total": 2}},
		{"failed round", func(m *metrics.Metrics) { m.OnPublishFailed(msg, 5, errors.New("x")) },
			map[string]float64{"outbox_publish_failed_rounds_total": 1}},
		{"dead letter", func(m *metrics.Metrics) { m.OnDeadLetter(outbox.DeadLetter{Message: msg}) },
			map[string]float64{`outbox_dead_lettered_total{type="OrderCreated"}`: 1}},
		{"park twice, unpark once", func(m *metrics.Metrics) { m.OnPark(key); m.OnPark(key); m.OnUnpark(key) },
			map[string]float64{"outbox_parked_aggregates": 1}},
		{"parked at start-up", func(m *metrics.Metrics) { m.SetParked(7) },
			map[string]float64{"outbox_parked_aggregates": 7}},
		{"stuck twice, unstuck once", func(m *metrics.Metrics) { m.OnStuck(key); m.OnStuck(key); m.OnUnstuck(key) },
			map[string]float64{"outbox_stuck_aggregates": 1}},
		{"breaker opens then half-opens", func(m *metrics.Metrics) {
			m.OnBreakerStateChange(breaker.Closed, breaker.Open)
			m.OnBreakerStateChange(breaker.Open, breaker.HalfOpen)
		}, map[string]float64{"outbox_breaker_state": 1,
			`outbox_breaker_transitions_total{to="open"}`: 1, `outbox_breaker_transitions_total{to="half-open"}`: 1}},
		{"checkpoint", func(m *metrics.Metrics) { m.OnCheckpoint("1", relay.Lag{Events: 7, Age: 2500 * time.Millisecond}) },
			map[string]float64{"outbox_lag_events": 7, "outbox_lag_seconds": 2.5}},
		{"restarts", func(m *metrics.Metrics) { m.Restarted("relay"); m.Restarted("relay"); m.Restarted("order-1") },
			map[string]float64{`outbox_worker_restarts_total{worker="relay"}`: 2, `outbox_worker_restarts_total{worker="order-1"}`: 1}},
		{"alerts", func(m *metrics.Metrics) { m.Alert("sent"); m.Alert("failed"); m.Alert("sent") },
			map[string]float64{`outbox_alerts_total{outcome="sent"}`: 2, `outbox_alerts_total{outcome="failed"}`: 1}},
		{"slot lag", func(m *metrics.Metrics) { m.SetSlotLag(4096) },
			map[string]float64{"outbox_replication_slot_lag_bytes": 4096}},
		{"cdc lag", func(m *metrics.Metrics) { m.SetCDCLag(90*time.Second, 24*time.Hour) },
			map[string]float64{"outbox_cdc_lag_seconds": 90, "outbox_cdc_log_ttl_seconds": 86400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tc.act(metrics.New(reg))
			got := series(t, reg)
			for k, want := range tc.want {
				if g, ok := got[k]; !ok || g != want {
					t.Errorf("%s = %v (present %v), want %v", k, g, ok, want)
				}
			}
			for k, g := range got {
				if _, named := tc.want[k]; !named && g != 0 {
					t.Errorf("%s = %v, want 0: this hook must not move it", k, g)
				}
			}
		})
	}
}

// Every registered collector is exercised above: a metric added without
// a case fails here.
func TestEveryCollectorIsCovered(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	// Vectors show only once a label value exists.
	m.OnDeadLetter(outbox.DeadLetter{Message: outbox.Message{Type: "x"}})
	m.OnBreakerStateChange(breaker.Closed, breaker.Open)
	m.Restarted("relay")
	m.Alert("sent")
	m.SetSlotLag(1)
	m.SetCDCLag(time.Second, time.Hour)
	m.ObserveRequest("GET /status", 200, time.Millisecond)
	covered := []string{
		"outbox_alerts_total", "outbox_breaker_state", "outbox_breaker_transitions_total", "outbox_cdc_lag_seconds",
		"outbox_cdc_log_ttl_seconds", "outbox_commit_to_ack_seconds", "outbox_dead_lettered_total",
		"outbox_http_request_duration_seconds", "outbox_http_requests_total", "outbox_lag_events",
		"outbox_lag_seconds", "outbox_parked_aggregates", "outbox_publish_failed_rounds_total", "outbox_publish_retries_total",
		"outbox_published_total", "outbox_replication_slot_lag_bytes", "outbox_stuck_aggregates", "outbox_worker_restarts_total",
	}
	names := map[string]bool{}
	for k := range series(t, reg) {
		names[family(k)] = true
	}
	got := slices.Collect(maps.Keys(names))
	sort.Strings(got)
	if !slices.Equal(got, covered) {
		t.Fatalf("registered metrics %v\nthe cases above cover %v", got, covered)
	}
}

func merge(a, b map[string]float64) map[string]float64 {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// A store without a replication slot or a CDC log exports neither gauge;
// the dead-letter total is there, at 0, before the first dead letter.
func TestFreshMetricsExportOnlyWhatApplies(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	got := series(t, reg)
	for _, absent := range []string{"outbox_replication_slot_lag_bytes", "outbox_cdc_lag_seconds", "outbox_cdc_log_ttl_seconds"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s is exported before the store reported one", absent)
		}
	}
	if v, ok := got[`outbox_dead_lettered_total{type=""}`]; !ok || v != 0 {
		t.Errorf("outbox_dead_lettered_total before any dead letter: %v (present %v), want 0", v, ok)
	}
	m.SetSlotLag(10)
	m.SetSlotLag(20) // registered once
	if v := series(t, reg)["outbox_replication_slot_lag_bytes"]; v != 20 {
		t.Errorf("slot lag %v, want 20", v)
	}
	m.ObserveRequest("GET /orders/{id}", 404, 3*time.Millisecond)
	got = series(t, reg)
	if v := got[`outbox_http_requests_total{code="404",route="GET /orders/{id}"}`]; v != 1 {
		t.Errorf("http requests: %v", got)
	}
	if v := got[`outbox_http_request_duration_seconds_count{route="GET /orders/{id}"}`]; v != 1 {
		t.Errorf("http request duration count %v", v)
	}
}

func TestHistoryRatesLatenciesAndTransitions(t *testing.T) {
	h := metrics.NewHistory(3)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h.Record(t0, relay.Stats{Published: 10, Breaker: "closed"})
	for _, ms := range []int{5, 1, 9} {
		h.OnPublish(outbox.Message{}, 1, time.Duration(ms)*time.Millisecond)
	}
	h.OnBreakerStateChange(breaker.Closed, breaker.Open)
	h.Record(t0.Add(2*time.Second), relay.Stats{Published: 30, LagEvents: 4, Breaker: "open"})
	h.Record(t0.Add(4*time.Second), relay.Stats{Published: 30})
	h.Record(t0.Add(6*time.Second), relay.Stats{Published: 36})
	doc := h.Snapshot(2 * time.Second)
	if len(doc.Samples) != 3 {
		t.Fatalf("kept %d samples, want the last 3", len(doc.Samples))
	}
	s := doc.Samples[0]
	if s.Rate != 10 || s.LatencyP50 != 5 || s.LatencyMax != 9 || s.LagEvents != 4 || s.Breaker != "open" {
		t.Errorf("first kept sample %+v", s)
	}
	if doc.Samples[1].Rate != 0 || doc.Samples[1].LatencyMax != 0 || doc.Samples[2].Rate != 3 {
		t.Errorf("later samples %+v", doc.Samples[1:])
	}
	if len(doc.Transitions) != 1 || doc.Transitions[0].From != "closed" || doc.Transitions[0].To != "open" {
		t.Errorf("transitions %+v", doc.Transitions)
	}
}
