// Package testenv finds the real services tests talk to. Locally a
// missing service skips the test; with OUTBOX_REQUIRE_SERVICES=1 (CI) it
// fails it, so a broken environment cannot pass as green.
package testenv

import (
	"os"
	"strings"
	"testing"
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

// PostgresCtl returns OUTBOX_TEST_PG_CTL, a script taking stop-immediate
// or start.
func PostgresCtl(t testing.TB) string { return need(t, "OUTBOX_TEST_PG_CTL", "PostgreSQL control") }

// KafkaBrokers returns OUTBOX_TEST_KAFKA_BROKERS, split on commas.
func KafkaBrokers(t testing.TB) []string {
	return strings.Split(need(t, "OUTBOX_TEST_KAFKA_BROKERS", "Apache Kafka"), ",")
}
