// Package memstore is the reference store: everything in memory, the same
// semantics as the SQL stores, for unit tests and as the executable
// definition of what store/storetest expects.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/outbox-dev/outbox/outbox"
)

// Store is safe for concurrent use.
type Store struct {
	mu          sync.Mutex
	rows        []outbox.Message // position = index + 1
	ids         map[string]bool
	checkpoints map[string]outbox.Position
	dead        []outbox.DeadLetter // ID = index + 1
	parked      map[outbox.AggregateKey]*outbox.ParkedAggregate
	wake        chan struct{}
}

// New returns an empty store.
func New() *Store {
	return &Store{
		ids:         map[string]bool{},
		checkpoints: map[string]outbox.Position{},
		parked:      map[outbox.AggregateKey]*outbox.ParkedAggregate{},
		wake:        make(chan struct{}, 1),
	}
}

// Tx buffers appends until the transaction function returns nil.
type Tx struct{ msgs []outbox.Message }

// Append adds messages to the transaction.
func (tx *Tx) Append(msgs ...outbox.Message) error {
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	tx.msgs = append(tx.msgs, msgs...)
	return nil
}

// Transact runs fn and commits its appends atomically when it returns nil.
func (s *Store) Transact(ctx context.Context, fn func(*Tx) error) error {
	tx := &Tx{}
	if err := fn(tx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	for _, m := range tx.msgs {
		if s.ids[m.ID.String()] {
			s.mu.Unlock()
			return fmt.Errorf("memstore: duplicate event id %s", m.ID)
		}
	}
	for _, m := range tx.msgs {
		s.ids[m.ID.String()] = true
		s.rows = append(s.rows, m)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Wake is signalled after each commit.
func (s *Store) Wake() <-chan struct{} { return s.wake }

func parsePos(p outbox.Position) (int, error) {
	if p == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("memstore: bad position %q", p)
	}
	return n, nil
}

// Fetch implements poll.Fetcher.
func (s *Store) Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error) {
	n, err := parsePos(after)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []outbox.Record
	for i := n; i < len(s.rows) && len(out) < max; i++ {
		out = append(out, outbox.Record{Message: s.rows[i], Position: outbox.Position(strconv.Itoa(i + 1))})
	}
	return out, nil
}

// LoadCheckpoint implements poll.Fetcher.
func (s *Store) LoadCheckpoint(ctx context.Context, name string) (outbox.Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkpoints[name], nil
}

// SaveCheckpoint implements poll.Fetcher.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, pos outbox.Position) error {
	if _, err := parsePos(pos); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkpoints[name] = pos
	return nil
}

// Backlog counts rows after the checkpoint.
func (s *Store) Backlog(ctx context.Context, name string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := parsePos(s.checkpoints[name])
	return int64(len(s.rows) - n), err
}

// AddDeadLetter implements outbox.DeadLetterStore.
func (s *Store) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := dl.Message.Key()
	for _, d := range s.dead {
		if d.Message.ID == dl.Message.ID && d.Status == outbox.StatusParked {
			return d, nil
		}
	}
	if p := s.parked[key]; p != nil {
		if head := s.headLocked(key); head != nil && dl.ParkedBehind == "" {
			dl.ParkedBehind = head.Message.ID.String()
		}
	} else {
		s.parked[key] = &outbox.ParkedAggregate{Key: key, ParkedAt: dl.FirstFailedAt}
	}
	dl.ID = int64(len(s.dead) + 1)
	dl.Status = outbox.StatusParked
	s.dead = append(s.dead, dl)
	return dl, nil
}

func (s *Store) headLocked(key outbox.AggregateKey) *outbox.DeadLetter {
	for i := range s.dead {
		if s.dead[i].Status == outbox.StatusParked && s.dead[i].Message.Key() == key {
			return &s.dead[i]
		}
	}
	return nil
}

// ParkedAggregates implements outbox.DeadLetterStore.
func (s *Store) ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]outbox.ParkedAggregate, 0, len(s.parked))
	for _, p := range s.parked {
		cp := *p
		for _, d := range s.dead {
			if d.Status == outbox.StatusParked && d.Message.Key() == p.Key {
				cp.ParkedEvents++
			}
		}
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b outbox.ParkedAggregate) int { return a.ParkedAt.Compare(b.ParkedAt) })
	return out, nil
}

// ParkedMessages implements outbox.DeadLetterStore.
func (s *Store) ParkedMessages(ctx context.Context, key outbox.AggregateKey) ([]outbox.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []outbox.DeadLetter
	for _, d := range s.dead {
		if d.Status == outbox.StatusParked && d.Message.Key() == key {
			out = append(out, d)
		}
	}
	return out, nil
}

// ResolveDeadLetter implements outbox.DeadLetterStore.
func (s *Store) ResolveDeadLetter(ctx context.Context, id int64, status outbox.DeadLetterStatus, note string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.dead) {
		return fmt.Errorf("memstore: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	d := &s.dead[id-1]
	now := time.Now().UTC()
	d.Status, d.ResolvedAt, d.Resolution = status, &now, note
	if status == outbox.StatusReplayed {
		d.ReplayCount++
	}
	return nil
}

// CompleteAction implements outbox.DeadLetterStore.
func (s *Store) CompleteAction(ctx context.Context, key outbox.AggregateKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.parked[key]
	if p == nil {
		return nil
	}
	if s.headLocked(key) == nil {
		delete(s.parked, key)
		return nil
	}
	p.Pending, p.PendingEntry, p.Reason, p.RequestedAt = "", 0, "", nil
	return nil
}

// FailAction implements outbox.DeadLetterStore.
func (s *Store) FailAction(ctx context.Context, key outbox.AggregateKey, entryID int64, cause string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.parked[key]; p != nil {
		p.Pending, p.PendingEntry, p.Reason, p.RequestedAt, p.LastError = "", 0, "", nil, cause
	}
	if entryID >= 1 && int(entryID) <= len(s.dead) {
		d := &s.dead[entryID-1]
		d.ReplayCount++
		d.FailureCount++
		d.Error = cause
		d.LastFailedAt = time.Now().UTC()
	}
	return nil
}

// RequestAction implements outbox.ActionRequester.
func (s *Store) RequestAction(ctx context.Context, key outbox.AggregateKey, req outbox.ActionRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.parked[key]
	if p == nil {
		return fmt.Errorf("memstore: %s: %w", key, outbox.ErrNotParked)
	}
	now := time.Now().UTC()
	p.Pending, p.PendingEntry, p.Reason, p.RequestedAt = req.Action, req.Entry, req.Reason, &now
	return nil
}

// ListDeadLetters returns entries matching f, oldest first. A negative
// Limit means no limit.
func (s *Store) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	var out []outbox.DeadLetter
	for _, d := range s.dead {
		if limit > 0 && len(out) == limit {
			break
		}
		if d.ID <= f.AfterID ||
			(f.Aggregate != nil && d.Message.Key() != *f.Aggregate) ||
			(f.Type != "" && d.Message.Type != f.Type) ||
			(f.Status != "" && d.Status != f.Status) ||
			(!f.Since.IsZero() && d.LastFailedAt.Before(f.Since)) ||
			(!f.Until.IsZero() && !d.LastFailedAt.Before(f.Until)) {
			continue
		}
		if f.OmitPayload {
			d = d.WithoutPayload()
		}
		out = append(out, d)
	}
	return out, nil
}

// GetDeadLetter returns one entry or outbox.ErrNotFound.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.dead) {
		return outbox.DeadLetter{}, fmt.Errorf("memstore: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	return s.dead[id-1], nil
}
