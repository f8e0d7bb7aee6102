package scylla

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrLeaseHeld: another relay holds the table's unexpired lease.
var ErrLeaseHeld = errors.New("lease held by another relay")

// ErrLeaseLost: this relay's lease expired or was taken over; it must stop
// publishing (and its progress writes are refused).
var ErrLeaseLost = errors.New("lease lost")

// leaseRecord is the lease row.
type leaseRecord struct {
	Owner   string
	Epoch   int64
	Expires time.Time
}

// leaseStore is the lease's compare-and-set storage (lightweight
// transactions in CQL); tests fake it.
type leaseStore interface {
	read(ctx context.Context, name string) (leaseRecord, bool, error)
	// create inserts the row if none exists (IF NOT EXISTS).
	create(ctx context.Context, name string, rec leaseRecord) (bool, error)
	// take replaces an expired holder (IF epoch = prev.Epoch AND expires < now).
	take(ctx context.Context, name string, prev, next leaseRecord, now time.Time) (bool, error)
	// renew extends the holder's lease (IF owner = rec.Owner AND epoch = rec.Epoch).
	renew(ctx context.Context, name string, rec leaseRecord) (bool, error)
}

// Lease lets one relay at a time publish a table's streams. Each
// acquisition takes a new epoch; progress writes carry it, and storage
// refuses a write whose epoch is older than the one it holds (fencing).
type Lease struct {
	store leaseStore
	name  string
	owner string
	ttl   time.Duration
	now   func() time.Time

	mu   sync.Mutex
	held leaseRecord
	ok   bool
}

// NewLease builds a lease named name for owner; now is the clock.
func newLease(store leaseStore, name, owner string, ttl time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{store: store, name: name, owner: owner, ttl: ttl, now: now}
}

// Acquire takes the lease if it is free or expired.
func (l *Lease) Acquire(ctx context.Context) error {
	now := l.now()
	cur, found, err := l.store.read(ctx, l.name)
	if err != nil {
		return fmt.Errorf("scylla: read lease %s: %w", l.name, err)
	}
	next := leaseRecord{Owner: l.owner, Epoch: 1, Expires: now.Add(l.ttl)}
	var applied bool
	switch {
	case !found:
		applied, err = l.store.create(ctx, l.name, next)
	case cur.Owner == l.owner && now.Before(cur.Expires):
		next.Epoch = cur.Epoch
		applied, err = l.store.renew(ctx, l.name, next)
	case now.Before(cur.Expires):
		return fmt.Errorf("scylla: lease %s: %s holds it until %s: %w", l.name, cur.Owner, cur.Expires.Format(time.RFC3339), ErrLeaseHeld)
	default:
		next.Epoch = cur.Epoch + 1
		applied, err = l.store.take(ctx, l.name, cur, next, now)
	}
	if err != nil {
		return fmt.Errorf("scylla: acquire lease %s: %w", l.name, err)
	}
	if !applied {
		return fmt.Errorf("scylla: lease %s: another relay won the race: %w", l.name, ErrLeaseHeld)
	}
	l.mu.Lock()
	l.held, l.ok = next, true
	l.mu.Unlock()
	return nil
}

// Renew extends the lease; ErrLeaseLost when it expired or was taken.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	rec, ok := l.held, l.ok
	l.mu.Unlock()
	if !ok || !l.now().Before(rec.Expires) {
		l.lose()
		return fmt.Errorf("scylla: lease %s expired: %w", l.name, ErrLeaseLost)
	}
	rec.Expires = l.now().Add(l.ttl)
	applied, err := l.store.renew(ctx, l.name, rec)
	if err != nil {
		return fmt.Errorf("scylla: renew lease %s: %w", l.name, err)
	}
	if !applied {
		l.lose()
		return fmt.Errorf("scylla: lease %s was taken over: %w", l.name, ErrLeaseLost)
	}
	l.mu.Lock()
	l.held = rec
	l.mu.Unlock()
	return nil
}

func (l *Lease) lose() {
	l.mu.Lock()
	l.ok = false
	l.mu.Unlock()
}

// Epoch returns the held epoch, or ErrLeaseLost.
func (l *Lease) Epoch() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ok || !l.now().Before(l.held.Expires) {
		return 0, fmt.Errorf("scylla: lease %s: %w", l.name, ErrLeaseLost)
	}
	return l.held.Epoch, nil
}
