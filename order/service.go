package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/outbox"
)

// Repository stores orders and their events atomically. Adapters live
// with the stores (store/sqlite, ...).
type Repository interface {
	// Create inserts o and ev in one transaction. With a non-empty key it
	// first looks the key up: a known key with the same request hash
	// returns the order it created (replayed = true) and writes nothing; a
	// known key with another hash fails with ErrIdempotencyKey.
	Create(ctx context.Context, o Order, ev outbox.Message, key, requestHash string) (got Order, replayed bool, err error)
	Get(ctx context.Context, id string) (Order, error)
	// Update replaces the order whose version is o.Version-1 and appends
	// ev, in one transaction, or fails with ErrConflict.
	Update(ctx context.Context, o Order, ev outbox.Message) error
}

// Service runs the order commands.
type Service struct {
	repo Repository
	now  func() time.Time
}

// NewService builds the service over repo.
func NewService(repo Repository) *Service {
	return &Service{repo: repo, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

func newEvent(o Order, eventType string, traceparent string) (outbox.Message, error) {
	m, err := outbox.NewMessage(AggregateType, o.ID, eventType, o.Version, o.event())
	if err != nil {
		return m, err
	}
	if traceparent != "" {
		m.Headers = map[string]string{outbox.HeaderTraceParent: traceparent}
	}
	return m, nil
}

// Meta is request metadata carried into the event.
type Meta struct {
	IdempotencyKey string
	TraceParent    string
}

// Create validates in and stores a new order with its OrderCreated event.
// It reports whether the result was replayed from an earlier request with
// the same idempotency key.
func (s *Service) Create(ctx context.Context, in CreateInput, meta Meta) (Order, bool, error) {
	if err := in.Validate(); err != nil {
		return Order{}, false, err
	}
	if err := validText("Idempotency-Key", meta.IdempotencyKey, MaxIDLength, false); err != nil {
		return Order{}, false, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Order{}, false, fmt.Errorf("order: new id: %w", err)
	}
	now := s.now()
	o := Order{
		ID: id.String(), CustomerID: in.CustomerID, Items: slices.Clone(in.Items), Currency: in.Currency,
		Address: in.Address, Status: StatusPending, Total: total(in.Items), Version: 1, CreatedAt: now, UpdatedAt: now,
	}
	ev, err := newEvent(o, EventCreated, meta.TraceParent)
	if err != nil {
		return Order{}, false, err
	}
	hash := ""
	if meta.IdempotencyKey != "" {
		body, _ := json.Marshal(in)
		sum := sha256.Sum256(body)
		hash = hex.EncodeToString(sum[:])
	}
	return s.repo.Create(ctx, o, ev, meta.IdempotencyKey, hash)
}

// Get returns an order or ErrNotFound.
func (s *Service) Get(ctx context.Context, id string) (Order, error) {
	if err := validText("id", id, MaxIDLength, true); err != nil {
		return Order{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return s.repo.Get(ctx, id)
}

// Update changes items or address. expected, when > 0, is the version the
// caller saw (If-Match); a different current version is ErrConflict.
func (s *Service) Update(ctx context.Context, id string, in UpdateInput, expected int64, meta Meta) (Order, error) {
	if err := in.Validate(); err != nil {
		return Order{}, err
	}
	return s.change(ctx, id, expected, EventUpdated, meta, func(o *Order) error {
		if o.Status == StatusCancelled {
			return ErrCancelled
		}
		if in.Items != nil {
			o.Items = slices.Clone(*in.Items)
			o.Total = total(o.Items)
		}
		if in.Address != nil {
			o.Address = *in.Address
		}
		return nil
	})
}

// Cancel cancels the order; cancelling twice is ErrCancelled.
func (s *Service) Cancel(ctx context.Context, id string, expected int64, meta Meta) (Order, error) {
	return s.change(ctx, id, expected, EventCancelled, meta, func(o *Order) error {
		if o.Status == StatusCancelled {
			return ErrCancelled
		}
		o.Status = StatusCancelled
		return nil
	})
}

func (s *Service) change(ctx context.Context, id string, expected int64, eventType string, meta Meta, apply func(*Order) error) (Order, error) {
	o, err := s.Get(ctx, id)
	if err != nil {
		return Order{}, err
	}
	if expected > 0 && o.Version != expected {
		return Order{}, fmt.Errorf("order %s is at version %d, not %d: %w", id, o.Version, expected, ErrConflict)
	}
	if err := apply(&o); err != nil {
		return Order{}, err
	}
	o.Version++
	o.UpdatedAt = s.now()
	ev, err := newEvent(o, eventType, meta.TraceParent)
	if err != nil {
		return Order{}, err
	}
	if err := s.repo.Update(ctx, o, ev); err != nil {
		return Order{}, err
	}
	return o, nil
}
