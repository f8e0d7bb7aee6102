//go:build unix

package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// RelayLock is the lock that makes one relay at a time read this
// database's outbox (poll.Lock): an exclusive flock on a file beside the
// database. The kernel releases it when its holder closes it or dies, so
// a standby takes over from a relay SIGKILLed a moment earlier; and SQLite
// is reached from one machine only, where flock holds.
func (s *Store) RelayLock(name string) *FileLock {
	return &FileLock{path: fmt.Sprintf("%s.relay-%s.lock", s.path, name)}
}

// FileLock is an exclusive, non-blocking flock on one file.
type FileLock struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// TryLock implements poll.Lock. The lock is never lost while held: only
// its holder's process can end it.
func (l *FileLock) TryLock(context.Context) (<-chan struct{}, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return nil, true, nil
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: relay lock %s: %w", l.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("sqlite: relay lock %s: %w", l.path, err)
	}
	l.f = f
	return nil, true, nil
}

// Unlock implements poll.Lock.
func (l *FileLock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor releases the flock
	l.f = nil
	return err
}
