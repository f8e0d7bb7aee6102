package scylla

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
)

// The dead-letter store has no transactions to lean on. It stays correct
// because of who writes what: entries and parking are written only by the
// relay inside the aggregate's lane (one writer per aggregate, and one
// relay per table under the lease), ids come from an LWT sequence, and a
// parked aggregate's row is only ever changed by LWTs, so an operator's
// request and the relay's completion cannot overwrite each other. Every
// multi-step write is ordered so a crash leaves a state the next attempt
// rolls forward.

var (
	_ relay.DeadLetterStore = (*Store)(nil)
	_ relay.ActionRequester = (*Store)(nil)
)

const dlqBucket = 0

const deadLetterColumns = `id, event_id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp,
	error, failure_count, first_failed_at, last_failed_at, status, parked_behind, replay_count, resolved_at, resolution`

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func (s *Store) scanDeadLetters(iter *gocql.Iter, keep func(outbox.DeadLetter) bool, limit int) ([]outbox.DeadLetter, error) {
	var out []outbox.DeadLetter
	for {
		var d outbox.DeadLetter
		var eventID gocql.UUID
		var payload string
		var ts, first, last, resolved int64
		var status string
		if !iter.Scan(&d.ID, &eventID, &d.Message.AggregateType, &d.Message.AggregateID, &d.Message.Type, &d.Message.Sequence,
			&payload, &d.Message.Headers, &ts, &d.Error, &d.FailureCount, &first, &last, &status, &d.ParkedBehind,
			&d.ReplayCount, &resolved, &d.Resolution) {
			break
		}
		d.Message.ID = uuid.UUID(eventID)
		d.Message.Payload = json.RawMessage(payload)
		if len(d.Message.Headers) == 0 {
			d.Message.Headers = nil
		}
		d.Message.Timestamp, d.FirstFailedAt, d.LastFailedAt = fromMicros(ts), fromMicros(first), fromMicros(last)
		d.Status = outbox.DeadLetterStatus(status)
		if resolved != 0 {
			t := fromMicros(resolved)
			d.ResolvedAt = &t
		}
		if keep(d) {
			out = append(out, d)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	if err := iter.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// nextID draws the next dead-letter id. Contention is only between
// relays racing for the lease, so a few rounds suffice.
func (s *Store) nextID(ctx context.Context) (int64, error) {
	for range 20 {
		var next int64
		err := s.session.Query(`SELECT next FROM ` + s.keyspace + `.outbox_sequences WHERE name = 'dead_letter'`).
			WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&next)
		var applied bool
		switch {
		case errors.Is(err, gocql.ErrNotFound):
			next = 1
			applied, err = s.session.Query(`INSERT INTO ` + s.keyspace + `.outbox_sequences (name, next) VALUES ('dead_letter', 2) IF NOT EXISTS`).
				WithContext(ctx).MapScanCAS(map[string]any{})
		case err == nil:
			applied, err = s.session.Query(`UPDATE `+s.keyspace+`.outbox_sequences SET next = ? WHERE name = 'dead_letter' IF next = ?`, next+1, next).
				WithContext(ctx).MapScanCAS(map[string]any{})
		}
		if err != nil {
			return 0, err
		}
		if applied {
			return next, nil
		}
	}
	return 0, fmt.Errorf("dead-letter id sequence: too much contention")
}

func (s *Store) listDeadLetters(ctx context.Context, afterID int64, keep func(outbox.DeadLetter) bool, limit int) ([]outbox.DeadLetter, error) {
	iter := s.session.Query(`SELECT `+deadLetterColumns+` FROM `+s.keyspace+`.dead_letter_queue WHERE bucket = ? AND id > ?`, dlqBucket, afterID).
		WithContext(ctx).PageSize(500).Iter()
	return s.scanDeadLetters(iter, keep, limit)
}

func parkedOf(key outbox.AggregateKey) func(outbox.DeadLetter) bool {
	return func(d outbox.DeadLetter) bool { return d.Status == outbox.StatusParked && d.Message.Key() == key }
}

// AddDeadLetter implements relay.DeadLetterStore.
func (s *Store) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	m := dl.Message
	parked, err := s.ParkedMessages(ctx, m.Key())
	if err != nil {
		return dl, fmt.Errorf("scylla: dead-letter %s: %w", m.ID, err)
	}
	out := dl
	if i := slices.IndexFunc(parked, func(d outbox.DeadLetter) bool { return d.Message.ID == m.ID }); i >= 0 {
		out = parked[i]
	} else {
		if dl.ParkedBehind == "" && len(parked) > 0 {
			out.ParkedBehind = parked[0].Message.ID.String()
		}
		if out.ID, err = s.nextID(ctx); err != nil {
			return dl, fmt.Errorf("scylla: dead-letter %s: %w", m.ID, err)
		}
		out.Status = outbox.StatusParked
		err = s.session.Query(`INSERT INTO `+s.keyspace+`.dead_letter_queue (bucket, `+deadLetterColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')`,
			dlqBucket, out.ID, gocql.UUID(m.ID), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), m.Headers,
			micros(m.Timestamp), out.Error, out.FailureCount, micros(out.FirstFailedAt), micros(out.LastFailedAt),
			string(outbox.StatusParked), out.ParkedBehind, out.ReplayCount).WithContext(ctx).Exec()
		if err != nil {
			return dl, fmt.Errorf("scylla: dead-letter %s: %w", m.ID, err)
		}
	}
	// Also when the entry existed: a crash may have come between the two
	// writes, and parking again is a no-op.
	if _, err := s.session.Query(`INSERT INTO `+s.keyspace+`.parked_aggregates
		(aggregatetype, aggregateid, parked_at, pending_action, pending_entry, reason, requested_at, last_error)
		VALUES (?, ?, ?, '', 0, '', 0, '') IF NOT EXISTS`, m.AggregateType, m.AggregateID, micros(out.FirstFailedAt)).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return dl, fmt.Errorf("scylla: park %s: %w", m.Key(), err)
	}
	return out, nil
}

// ParkedAggregates implements relay.DeadLetterStore. The table holds
// only parked aggregates, so a full scan reads little.
func (s *Store) ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error) {
	iter := s.session.Query(`SELECT aggregatetype, aggregateid, parked_at, pending_action, pending_entry, reason, requested_at, last_error
		FROM ` + s.keyspace + `.parked_aggregates`).WithContext(ctx).Consistency(gocql.LocalSerial).Iter()
	var out []outbox.ParkedAggregate
	var p outbox.ParkedAggregate
	var parkedAt, requested int64
	var pending string
	for iter.Scan(&p.Key.Type, &p.Key.ID, &parkedAt, &pending, &p.PendingEntry, &p.Reason, &requested, &p.LastError) {
		p.ParkedAt, p.Pending, p.RequestedAt = fromMicros(parkedAt), outbox.Action(pending), nil
		if requested != 0 {
			t := fromMicros(requested)
			p.RequestedAt = &t
		}
		out = append(out, p)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: parked aggregates: %w", err)
	}
	if len(out) > 0 {
		counts := map[outbox.AggregateKey]int{}
		all, err := s.listDeadLetters(ctx, 0, func(d outbox.DeadLetter) bool { return d.Status == outbox.StatusParked }, -1)
		if err != nil {
			return nil, fmt.Errorf("scylla: parked aggregates: %w", err)
		}
		for _, d := range all {
			counts[d.Message.Key()]++
		}
		for i := range out {
			out[i].ParkedEvents = counts[out[i].Key]
		}
	}
	slices.SortFunc(out, func(a, b outbox.ParkedAggregate) int {
		return cmp.Or(a.ParkedAt.Compare(b.ParkedAt), cmp.Compare(a.Key.Type, b.Key.Type), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	return out, nil
}

// ParkedMessages implements relay.DeadLetterStore.
func (s *Store) ParkedMessages(ctx context.Context, key outbox.AggregateKey) ([]outbox.DeadLetter, error) {
	out, err := s.listDeadLetters(ctx, 0, parkedOf(key), -1)
	if err != nil {
		return nil, fmt.Errorf("scylla: parked messages of %s: %w", key, err)
	}
	return out, nil
}

// ResolveDeadLetter implements relay.DeadLetterStore.
func (s *Store) ResolveDeadLetter(ctx context.Context, id int64, status outbox.DeadLetterStatus, note string) error {
	d, err := s.GetDeadLetter(ctx, id)
	if err != nil {
		return err
	}
	if status == outbox.StatusReplayed {
		d.ReplayCount++
	}
	err = s.session.Query(`UPDATE `+s.keyspace+`.dead_letter_queue SET status = ?, resolved_at = ?, resolution = ?, replay_count = ?
		WHERE bucket = ? AND id = ?`, string(status), micros(time.Now()), note, d.ReplayCount, dlqBucket, id).WithContext(ctx).Exec()
	if err != nil {
		return fmt.Errorf("scylla: resolve dead letter %d: %w", id, err)
	}
	return nil
}

// CompleteAction implements relay.DeadLetterStore.
func (s *Store) CompleteAction(ctx context.Context, key outbox.AggregateKey) error {
	left, err := s.ParkedMessages(ctx, key)
	if err != nil {
		return err
	}
	q := `UPDATE ` + s.keyspace + `.parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = 0
		WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`
	if len(left) == 0 {
		q = `DELETE FROM ` + s.keyspace + `.parked_aggregates WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`
	}
	if _, err := s.session.Query(q, key.Type, key.ID).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: complete action on %s: %w", key, err)
	}
	return nil
}

// FailAction implements relay.DeadLetterStore.
func (s *Store) FailAction(ctx context.Context, key outbox.AggregateKey, entryID int64, cause string) error {
	if _, err := s.session.Query(`UPDATE `+s.keyspace+`.parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = 0,
		last_error = ? WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`, cause, key.Type, key.ID).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: fail action on %s: %w", key, err)
	}
	if entryID == 0 {
		return nil // a refused request charges no entry
	}
	d, err := s.GetDeadLetter(ctx, entryID)
	if err != nil {
		return err
	}
	err = s.session.Query(`UPDATE `+s.keyspace+`.dead_letter_queue SET replay_count = ?, failure_count = ?, error = ?, last_failed_at = ?
		WHERE bucket = ? AND id = ?`, d.ReplayCount+1, d.FailureCount+1, cause, micros(time.Now()), dlqBucket, entryID).WithContext(ctx).Exec()
	if err != nil {
		return fmt.Errorf("scylla: fail action on %s: %w", key, err)
	}
	return nil
}

// RequestAction implements relay.ActionRequester.
func (s *Store) RequestAction(ctx context.Context, key outbox.AggregateKey, req outbox.ActionRequest) error {
	applied, err := s.session.Query(`UPDATE `+s.keyspace+`.parked_aggregates SET pending_action = ?, pending_entry = ?, reason = ?, requested_at = ?
		WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`, string(req.Action), req.Entry, req.Reason, micros(time.Now()), key.Type, key.ID).
		WithContext(ctx).MapScanCAS(map[string]any{})
	if err != nil {
		return fmt.Errorf("scylla: request %s on %s: %w", req.Action, key, err)
	}
	if !applied {
		return fmt.Errorf("scylla: %s: %w", key, relay.ErrNotParked)
	}
	return nil
}

// ListDeadLetters returns entries matching f, oldest first; a negative
// Limit means no limit. Filters are applied while paging through the
// single dead-letter partition.
func (s *Store) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	out, err := s.listDeadLetters(ctx, f.AfterID, func(d outbox.DeadLetter) bool {
		return (f.Aggregate == nil || d.Message.Key() == *f.Aggregate) &&
			(f.Type == "" || d.Message.Type == f.Type) &&
			(f.Status == "" || d.Status == f.Status) &&
			(f.Since.IsZero() || !d.LastFailedAt.Before(f.Since)) &&
			(f.Until.IsZero() || d.LastFailedAt.Before(f.Until))
	}, limit)
	if err != nil {
		return nil, fmt.Errorf("scylla: list dead letters: %w", err)
	}
	return out, nil
}

// GetDeadLetter returns one entry or relay.ErrNotFound.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	iter := s.session.Query(`SELECT `+deadLetterColumns+` FROM `+s.keyspace+`.dead_letter_queue WHERE bucket = ? AND id = ?`, dlqBucket, id).
		WithContext(ctx).Iter()
	got, err := s.scanDeadLetters(iter, func(outbox.DeadLetter) bool { return true }, 1)
	if err != nil {
		return outbox.DeadLetter{}, fmt.Errorf("scylla: dead letter %d: %w", id, err)
	}
	if len(got) == 0 {
		return outbox.DeadLetter{}, fmt.Errorf("scylla: dead letter %d: %w", id, relay.ErrNotFound)
	}
	return got[0], nil
}
