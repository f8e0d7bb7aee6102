package scylla

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// AppendBatch is the conformance suite's append: a domain row and msgs in
// one LOGGED BATCH. A failing append abandons the batch unsent, which is
// the only way a LOGGED BATCH fails: whole.
func (s *Store) AppendBatch(ctx context.Context, msgs []outbox.Message, fail bool) error {
	if fail {
		return errors.New("storetest: abandoned batch")
	}
	now := time.Now().UTC()
	return s.AppendWithOrder(ctx, order.Order{ID: "storetest-" + uuid.NewString(), Status: order.StatusPending, CreatedAt: now, UpdatedAt: now}, msgs...)
}

// AppendEventsAt writes msgs in one LOGGED BATCH whose write timestamp
// is at: CDC dates the change by it, so a test can make history as old
// as it needs without waiting for it.
func (s *Store) AppendEventsAt(ctx context.Context, at time.Time, msgs ...outbox.Message) error {
	b, err := s.eventsBatch(ctx, msgs)
	if err != nil {
		return err
	}
	return s.session.ExecuteBatch(b.WithTimestamp(at.UnixMicro()))
}

// Keyspace names the store's keyspace.
func (s *Store) Keyspace() string { return s.keyspace }

// HoldLeaseRenewals stops (or resumes) renewing the lease, as a stalled
// relay would.
func (src *Source) HoldLeaseRenewals(on bool) { src.holdRenewals.Store(on) }

// OrdersWithClock is the repository of an instance whose clock is now.
func (s *Store) OrdersWithClock(now func() time.Time) Orders {
	r := s.Orders()
	r.now = now
	return r
}

// BeforeStep has f hear each step of the repository's writes before it
// runs (note, key, claim, arm, read, event, clear, done).
func (r Orders) BeforeStep(f func(step string, attempt int)) Orders {
	r.hook = f
	return r
}

// CrashingAfterClaim stops each update after its lightweight
// transaction, as a crash would.
func (r Orders) CrashingAfterClaim() Orders {
	r.crashAfterClaim = true
	return r
}

// NoteAt writes a write-ahead note as if at was the writer's time.
func (r Orders) NoteAt(ctx context.Context, at time.Time, id string, version int64) error {
	r.now = func() time.Time { return at }
	_, err := r.writeNote(ctx, id, version, "")
	return err
}
