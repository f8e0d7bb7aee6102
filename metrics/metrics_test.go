package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/metrics"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

func TestHooksFeedTheCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	msg, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, nil)
	m.OnPublish(msg, 1, 20*time.Millisecond)
	m.OnRetry(msg, retry.Attempt{N: 1, Err: errors.New("x")})
	m.OnPublishFailed(msg, 5, errors.New("x"))
	m.OnDeadLetter(outbox.DeadLetter{Message: msg})
	m.OnPark(msg.Key())
	m.OnBreakerStateChange(breaker.Closed, breaker.Open)
	m.OnCheckpoint("1", relay.Lag{Events: 7, Age: 2 * time.Second})
	m.Restarted("relay")
	m.Alert("sent")
	m.SetSlotLag(4096)
	want := `
# HELP outbox_breaker_state Circuit breaker state: 0 closed, 1 half-open, 2 open.
# TYPE outbox_breaker_state gauge
outbox_breaker_state 2
# HELP outbox_lag_events Events read but not yet checkpointed.
# TYPE outbox_lag_events gauge
outbox_lag_events 7
# HELP outbox_parked_aggregates Aggregates parked behind a dead letter.
# TYPE outbox_parked_aggregates gauge
outbox_parked_aggregates 1
# HELP outbox_published_total Events acknowledged by the broker.
# TYPE outbox_published_total counter
outbox_published_total 1
# HELP outbox_replication_slot_lag_bytes WAL the PostgreSQL replication slot holds behind the server's current position.
# TYPE outbox_replication_slot_lag_bytes gauge
outbox_replication_slot_lag_bytes 4096
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outbox_breaker_state", "outbox_lag_events",
		"outbox_parked_aggregates", "outbox_published_total", "outbox_replication_slot_lag_bytes"); err != nil {
		t.Fatal(err)
	}
}
