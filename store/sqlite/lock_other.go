//go:build !unix

package sqlite

import "context"

// RelayLock on systems without flock excludes nothing: run one relay per
// database there.
func (s *Store) RelayLock(name string) *FileLock { return &FileLock{} }

// FileLock is a no-op where flock is missing.
type FileLock struct{}

// TryLock implements poll.Lock; it always succeeds.
func (*FileLock) TryLock(context.Context) (<-chan struct{}, bool, error) { return nil, true, nil }

// Unlock implements poll.Lock.
func (*FileLock) Unlock() error { return nil }
