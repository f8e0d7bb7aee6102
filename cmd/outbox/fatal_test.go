package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
)

// lockedBuffer is a log sink the test reads while the command writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A replication slot lost while the relay runs is the end of the process,
// with a message that says so and exit status 1: restarting the relay
// forever would hide that events may be gone.
func TestSlotLostWhileRunningEndsTheProcess(t *testing.T) {
	dsn := testenv.PostgresDatabase(t)
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	var stdout, stderr lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(context.Background(), []string{"relay", "--store", dsn, "--source", "cdc", "--slot", "lost_slot",
			"--brokers", broker.Addrs()[0]}, &stdout, &stderr)
	}()
	db, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	active := func() bool {
		var ok bool
		db.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'lost_slot' AND active)`).Scan(&ok)
		return ok
	}
	testenv.Eventually(t, 30*time.Second, "the relay streams from its slot", active)
	// The slot goes while the relay holds it (an operator, or WAL removed
	// past max_slot_wal_keep_size): end its session, then drop it before
	// the restarted relay takes it again.
	testenv.Eventually(t, 30*time.Second, "the slot is dropped", func() bool {
		db.Exec(t.Context(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'lost_slot' AND active`)
		_, err := db.Exec(t.Context(), `SELECT pg_drop_replication_slot('lost_slot')`)
		return err == nil
	})
	select {
	case c := <-code:
		msg := stderr.String()
		if c != 1 || !strings.Contains(msg, "slot lost_slot is missing") || !strings.Contains(msg, "--recreate-slot") {
			t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and a message naming the lost slot", c, msg)
		}
		t.Logf("exit %d:\n%s", c, msg)
		if n := strings.Count(msg, "is missing"); n > 2 {
			t.Fatalf("the lost slot was reported %d times: restarted instead of stopping\n%s", n, msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the relay still runs 30 s after its slot was dropped\n%s", stderr.String())
	}
}
