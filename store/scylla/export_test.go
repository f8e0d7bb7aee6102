package scylla

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"
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

// AppendWithOrder writes the order row and its events in one LOGGED BATCH.
func (s *Store) AppendWithOrder(ctx context.Context, o order.Order, msgs ...outbox.Message) error {
	b, err := s.eventsBatch(ctx, msgs)
	if err != nil {
		return err
	}
	stmt, args, err := s.Orders().orderInsert(o)
	if err != nil {
		return err
	}
	b.Query(stmt, args...)
	if err := s.session.ExecuteBatch(b); err != nil {
		return fmt.Errorf("scylla: logged batch for order %s: %w", o.ID, err)
	}
	return nil
}

// ScanOutbox reads every outbox row whole (payload and headers included),
// each aggregate's in order: a full table scan, for the checkers of the
// demo, chaos and tests, not for production paths.
func (s *Store) ScanOutbox(ctx context.Context) ([]outbox.Message, error) {
	iter := s.session.Query(`SELECT id, aggregatetype, aggregateid, type, sequence, timestamp, payload, headers FROM ` + s.keyspace + `.outbox_messages`).
		WithContext(ctx).PageSize(5000).Iter()
	var out []outbox.Message
	var id gocql.UUID
	var us int64
	var payload string
	for {
		var m outbox.Message
		if !iter.Scan(&id, &m.AggregateType, &m.AggregateID, &m.Type, &m.Sequence, &us, &payload, &m.Headers) {
			break
		}
		m.ID, m.Timestamp, m.Payload = uuid.UUID(id), time.UnixMicro(us).UTC(), []byte(payload)
		out = append(out, m)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: scan outbox: %w", err)
	}
	return out, nil
}

// CountRows counts order and outbox rows: full scans, for tests.
func (s *Store) CountRows(ctx context.Context) (orders, events int64, err error) {
	if err = s.session.Query(`SELECT count(*) FROM ` + s.keyspace + `.orders`).WithContext(ctx).Scan(&orders); err != nil {
		return 0, 0, err
	}
	err = s.session.Query(`SELECT count(*) FROM ` + s.keyspace + `.outbox_messages`).WithContext(ctx).Scan(&events)
	return orders, events, err
}

// InsertPlain writes an order row without its event (a benchmark's
// baseline).
func (r Orders) InsertPlain(ctx context.Context, o order.Order) error {
	stmt, args, err := r.orderInsert(o)
	if err != nil {
		return err
	}
	return r.s.session.Query(stmt, args...).WithContext(ctx).Exec()
}

// ProxyNode puts a proxy whose answers can be held back in front of a node
// (timeouts_test.go), for the external tests too.
var ProxyNode = proxyNode
