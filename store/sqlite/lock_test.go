//go:build unix

package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/outbox-dev/outbox/store/sqlite"
)

// Two relays on one database file: one lock at a time, free again when
// its holder lets go. (That the kernel frees it when the holder is
// SIGKILLed is what outbox-lab chaos R11 shows, with real processes.)
func TestRelayLockAdmitsOneHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	open := func() *sqlite.Store {
		s, err := sqlite.Open(t.Context(), path, sqlite.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open().RelayLock("default"), open().RelayLock("default")
	if _, ok, err := a.TryLock(t.Context()); !ok || err != nil {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := b.TryLock(t.Context()); ok || err != nil {
		t.Fatalf("second lock while the first is held: %v %v, want false", ok, err)
	}
	if _, ok, _ := open().RelayLock("other").TryLock(t.Context()); !ok {
		t.Fatal("a lock of another name was refused")
	}
	a.Unlock()
	a.Unlock() // twice is fine
	if _, ok, err := b.TryLock(t.Context()); !ok || err != nil {
		t.Fatalf("second lock after the first was released: %v %v", ok, err)
	}
}
