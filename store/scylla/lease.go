package scylla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
//
// Its holder trusts it until a quarter of the TTL before it expires: a
// standby takes over only once the row's expiry has passed by its own
// clock, so the holder has stopped by then unless the two clocks differ
// by more than that margin. Expiry is counted from before each renewal
// was sent, never from its answer.
type Lease struct {
	store  leaseStore
	name   string
	owner  string
	ttl    time.Duration
	margin time.Duration
	now    func() time.Time

	mu       sync.Mutex
	held     leaseRecord
	ok       bool
	lost     chan struct{}
	lostOnce sync.Once
}

// newLease builds a lease named name for owner; now is the clock. owner
// must be unique to the process (see Source): a holder whose owner
// matches the row renews it as its own.
func newLease(store leaseStore, name, owner string, ttl time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{store: store, name: name, owner: owner, ttl: ttl, margin: ttl / 4, now: now, lost: make(chan struct{})}
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
		return &heldError{name: l.name, holder: cur}
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

// heldError says who holds the lease and until when.
type heldError struct {
	name   string
	holder leaseRecord
}

func (e *heldError) Error() string {
	return fmt.Sprintf("scylla: lease %s: %s holds it until %s: %s", e.name, e.holder.Owner, e.holder.Expires.Format(time.RFC3339), ErrLeaseHeld)
}

func (e *heldError) Unwrap() error { return ErrLeaseHeld }

// Renew extends the lease; ErrLeaseLost when it ran out or was taken.
func (l *Lease) Renew(ctx context.Context) error {
	if _, err := l.Epoch(); err != nil {
		return err
	}
	l.mu.Lock()
	rec := l.held
	l.mu.Unlock()
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
	if l.ok {
		l.held = rec
	}
	l.mu.Unlock()
	return nil
}

func (l *Lease) lose() {
	l.mu.Lock()
	l.ok = false
	l.mu.Unlock()
	l.lostOnce.Do(func() { close(l.lost) })
}

// Lost is closed once the lease is known to be lost: a renewal was
// refused, or a check found it past its holder's share of the TTL.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Epoch returns the held epoch, or ErrLeaseLost once the lease was lost
// or has less than the margin left.
func (l *Lease) Epoch() (int64, error) {
	l.mu.Lock()
	ok, held := l.ok, l.held
	l.mu.Unlock()
	if !ok || !l.now().Before(held.Expires.Add(-l.margin)) {
		l.lose()
		return 0, fmt.Errorf("scylla: lease %s: %w", l.name, ErrLeaseLost)
	}
	return held.Epoch, nil
}

// remaining is how long the holder may still trust the lease.
func (l *Lease) remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ok {
		return 0
	}
	return max(l.held.Expires.Add(-l.margin).Sub(l.now()), 0)
}

// heldInStore reports whether the lease row names this holder at its
// epoch, whatever the local clock says.
func (l *Lease) heldInStore(ctx context.Context) (bool, error) {
	l.mu.Lock()
	held := l.held
	l.mu.Unlock()
	cur, found, err := l.store.read(ctx, l.name)
	if err != nil {
		return false, err
	}
	return found && cur.Owner == l.owner && cur.Epoch == held.Epoch, nil
}

// waitForLease acquires the lease, waiting as a standby while another
// relay holds it: it says so once, tries again when the holder's lease
// would expire (or a quarter TTL later, whichever is sooner), and says
// when it took over. It returns ctx's error if ctx ends first.
func waitForLease(ctx context.Context, l *Lease, log *slog.Logger) error {
	for standby := false; ; {
		err := l.Acquire(ctx)
		if err == nil {
			if standby {
				log.Warn("took over: this relay now reads the table's CDC log", "lease", l.name, "owner", l.owner)
			}
			return nil
		}
		var held *heldError
		if !errors.Is(err, ErrLeaseHeld) {
			return err
		}
		wait := l.ttl / 4
		if errors.As(err, &held) {
			wait = min(wait, max(held.holder.Expires.Sub(l.now()), 0)+time.Millisecond)
			if !standby {
				log.Warn("standby: another relay reads this table's CDC log; this one takes over if it stops renewing its lease",
					"lease", l.name, "holder", held.holder.Owner, "until", held.holder.Expires.UTC().Format(time.RFC3339))
			}
			standby = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
