// Package testenv finds the real services tests talk to. Locally a
// missing service skips the test; with OUTBOX_REQUIRE_SERVICES=1 (CI) it
// fails it, so a broken environment cannot pass as green.
package testenv

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func need(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s is required (OUTBOX_REQUIRE_SERVICES=1) but %s is not set; run ./scripts/test.sh", what, env)
		}
		t.Skipf("%s not available: set %s or run ./scripts/test.sh", what, env)
	}
	return v
}

// PostgresDSN returns OUTBOX_TEST_PG_DSN.
func PostgresDSN(t testing.TB) string { return need(t, "OUTBOX_TEST_PG_DSN", "PostgreSQL") }

// PostgresTLSDSN returns OUTBOX_TEST_PG_TLS_DSN: a password user that
// may connect only over TLS, with sslmode=verify-full and the test CA.
func PostgresTLSDSN(t testing.TB) string {
	return need(t, "OUTBOX_TEST_PG_TLS_DSN", "PostgreSQL over TLS")
}

// PostgresCtl returns OUTBOX_TEST_PG_CTL, a script taking stop-immediate
// or start.
func PostgresCtl(t testing.TB) string { return need(t, "OUTBOX_TEST_PG_CTL", "PostgreSQL control") }

// KafkaBrokers returns OUTBOX_TEST_KAFKA_BROKERS, split on commas.
func KafkaBrokers(t testing.TB) []string {
	return strings.Split(need(t, "OUTBOX_TEST_KAFKA_BROKERS", "Apache Kafka"), ",")
}

// Eventually polls cond every 10 ms until it holds, failing the test
// after limit. It waits on a ticker, never sleeps.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}

// Serve runs svc until the returned stop is called (or the test ends);
// stop returns what Serve returned.
func Serve(t testing.TB, svc interface{ Serve(context.Context) error }) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}
