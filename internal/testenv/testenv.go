// Package testenv finds the real services tests talk to. Locally a
// missing service skips the test; with OUTBOX_REQUIRE_SERVICES=1 (CI) it
// fails it, so a broken environment cannot pass as green.
package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// PostgresDatabase creates a fresh, empty database on the test server and
// returns its DSN; the database and its idle replication slots are
// dropped when the test ends.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	base := PostgresDSN(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("t_%d_%d", time.Now().UnixNano(), rand.IntN(1000))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		// A terminated walsender lets go of its slot a moment later, and
		// a slot left behind keeps the database and one of the server's
		// few slots (max_replication_slots) for good: wait for it.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
			admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active`, name)
			admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
			var left int
			if admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left) != nil ||
				left == 0 || time.Now().After(deadline) {
				break
			}
		}
		admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return u.String()
}
