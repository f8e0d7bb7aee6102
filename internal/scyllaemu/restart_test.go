package scyllaemu

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/retry"
)

// TestTheProxyOutlivesACassandraRestart kills the Cassandra node with
// SIGKILL and starts it again (OUTBOX_TEST_CASSANDRA_CTL, which
// scripts/services.sh writes), as `outbox-lab chaos` does on the ScyllaDB
// target (R6). Afterwards, through the same proxy and the same client
// session: a write to a CDC table is logged, and a new CDC table gets its
// log (the proxy's own session to Cassandra must have reconnected).
//
// It stops the node every other test of the run talks to, so it runs only
// when asked: OUTBOX_TEST_RESTART_CASSANDRA=1. In CI the same is shown by
// chaos R6 on the ScyllaDB target, which scripts/test.sh runs after the
// tests: `outbox serve` writes through the proxy before and after the node
// is killed and started again.
func TestTheProxyOutlivesACassandraRestart(t *testing.T) {
	up := upstream(t)
	ctl := os.Getenv("OUTBOX_TEST_CASSANDRA_CTL")
	if ctl == "" || os.Getenv("OUTBOX_TEST_RESTART_CASSANDRA") != "1" {
		t.Skip("restarts the shared Cassandra node: set OUTBOX_TEST_RESTART_CASSANDRA=1 and OUTBOX_TEST_CASSANDRA_CTL")
	}
	// Cancelled by the cleanup, after the keyspace is dropped through the
	// proxy.
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(ctx, Config{Upstream: up})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		p.Close()
	})
	// A client that looks for its node every second, as the store's does.
	client := session(t, p.Addr(), func(c *gocql.ClusterConfig) { c.ReconnectInterval = time.Second })
	ks := fmt.Sprintf("scyllaemu_r%d_%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
	t.Cleanup(func() { client.Query("DROP KEYSPACE IF EXISTS " + ks).Exec() })
	for _, st := range []string{
		`CREATE KEYSPACE ` + ks + ` WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
		`CREATE TABLE ` + ks + `.t (pk text, ck int, v text, PRIMARY KEY (pk, ck)) WITH cdc = {'enabled': true}`,
	} {
		if err := client.Query(st).WithContext(ctx).Exec(); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
	write := func(table, pk string) error {
		return client.Query(`INSERT INTO `+ks+`.`+table+` (pk, ck, v) VALUES (?, 1, 'x')`, pk).WithContext(ctx).Exec()
	}
	logged := func(table, pk string) (int, error) {
		var n int
		err := client.Query(`SELECT count(*) FROM `+ks+`.`+table+LogSuffix+` WHERE pk = ? ALLOW FILTERING`, pk).WithContext(ctx).Scan(&n)
		return n, err
	}
	if err := write("t", "before"); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command(ctl, "kill").CombinedOutput(); err != nil {
		t.Fatalf("kill: %v: %s", err, out)
	}
	if err := write("t", "down"); err == nil {
		t.Fatal("a write through the proxy succeeded with Cassandra killed")
	}
	start := time.Now()
	if out, err := exec.Command(ctl, "start").CombinedOutput(); err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	listening := time.Now()
	t.Logf("Cassandra listened again %s after the start", listening.Sub(start).Round(time.Millisecond))

	// The client's session reconnects through the proxy.
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if lastErr = write("t", "after"); lastErr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write through the proxy within 10 s of Cassandra listening again: %v", lastErr)
		}
		if err := retry.Wait(ctx, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("a write through the proxy succeeded %s after Cassandra listened", time.Since(listening).Round(time.Millisecond))
	for _, pk := range []string{"before", "after"} {
		if n, err := logged("t", pk); err != nil || n != 1 {
			t.Errorf("log rows of %q: %d (%v), want 1", pk, n, err)
		}
	}
	// DDL with cdc options: the proxy completes it on its own session.
	if err := client.Query(`CREATE TABLE ` + ks + `.u (pk text, ck int, v text, PRIMARY KEY (pk, ck)) WITH cdc = {'enabled': true}`).
		WithContext(ctx).Exec(); err != nil {
		t.Fatalf("a CDC table created after the restart: %v", err)
	}
	if err := write("u", "new"); err != nil {
		t.Fatal(err)
	}
	if n, err := logged("u", "new"); err != nil || n != 1 {
		t.Errorf("log rows of the table created after the restart: %d (%v), want 1", n, err)
	}
	var gens int
	if err := client.Query(`SELECT count(*) FROM system_distributed.cdc_generation_timestamps WHERE key = 'timestamps'`).
		Consistency(gocql.One).Scan(&gens); err != nil || gens == 0 {
		t.Errorf("generations after the restart: %d (%v)", gens, err)
	}
}
