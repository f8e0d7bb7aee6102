package postgres_test

import (
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
)

// Two polling relays on one database: one holds the advisory lock; when
// its session ends (the process killed, the connection cut) it hears it
// has lost the lock, and the other can take it.
func TestRelayLockIsOneSessionsAndLostWithIt(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	a, b := s.RelayLock("default"), s.RelayLock("default")
	a.CheckEvery = 50 * time.Millisecond
	lost, ok, err := a.TryLock(ctx)
	if !ok || err != nil {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	defer a.Unlock()
	if _, ok, err := b.TryLock(ctx); ok || err != nil {
		t.Fatalf("second lock while the first is held: %v %v, want false", ok, err)
	}
	if _, err := s.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the holder did not hear that its session ended")
	}
	testenv.Eventually(t, 5*time.Second, "the second relay takes the lock", func() bool {
		_, ok, err := b.TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	b.Unlock()
}
