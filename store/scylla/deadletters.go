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
	_ outbox.DeadLetterStore = (*Store)(nil)
	_ outbox.ActionRequester = (*Store)(nil)
)

// Dead letters are split into partitions of consecutive ids (ids come
// from an LWT sequence): one partition for them all grew without end and
// was read whole to find an aggregate's parked entries, every second by
// the relay's poll. An index, parked_dead_letters, names each aggregate's
// parked entries, and parked_aggregates counts them. Entries of releases
// before the split stay in bucket 0, with ids below the point the split
// began (outbox_sequences 'dead_letter_buckets_from', set by Migrate).
const defaultDLQBucketSize = 100

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

// bucketsFrom is the first id of the split layout, read once.
func (s *Store) bucketsFrom(ctx context.Context) (int64, error) {
	if from := s.dlqFrom.Load(); from > 0 {
		return from, nil
	}
	var from int64
	err := s.session.Query(`SELECT next FROM ` + s.keyspace + `.outbox_sequences WHERE name = 'dead_letter_buckets_from'`).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&from)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, fmt.Errorf("scylla: the dead-letter table's layout is not recorded: run migrate")
	}
	if err != nil {
		return 0, fmt.Errorf("scylla: dead-letter layout: %w", err)
	}
	s.dlqFrom.Store(from)
	return from, nil
}

// bucketOf is the partition of dead letter id.
func (s *Store) bucketOf(ctx context.Context, id int64) (int32, error) {
	from, err := s.bucketsFrom(ctx)
	if err != nil || id < from {
		return 0, err
	}
	return int32(id/s.dlqBucketSize + 1), nil
}

// initDeadLetterBuckets records where the split layout begins: after
// every id the sequence has handed out.
func initDeadLetterBuckets(ctx context.Context, session *gocql.Session, ks string) error {
	var next int64 = 1
	err := session.Query(`SELECT next FROM ` + ks + `.outbox_sequences WHERE name = 'dead_letter'`).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&next)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return fmt.Errorf("scylla: migrate: read the dead-letter sequence: %w", err)
	}
	if _, err := session.Query(`INSERT INTO `+ks+`.outbox_sequences (name, next) VALUES ('dead_letter_buckets_from', ?) IF NOT EXISTS`, next).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: migrate: record the dead-letter layout: %w", err)
	}
	// Index the parked entries of the single partition of earlier
	// releases (again on every migrate: idempotent, and it catches what a
	// relay of the earlier release parked since).
	iter := session.Query(`SELECT id, aggregatetype, aggregateid, status, first_failed_at FROM ` + ks + `.dead_letter_queue WHERE bucket = 0`).
		WithContext(ctx).PageSize(500).Iter()
	var id, at int64
	var aggType, aggID, status string
	indexed := map[outbox.AggregateKey]bool{}
	for iter.Scan(&id, &aggType, &aggID, &status, &at) {
		if status != string(outbox.StatusParked) {
			continue
		}
		if err := session.Query(`INSERT INTO `+ks+`.parked_dead_letters (aggregatetype, aggregateid, id, parked_at) VALUES (?, ?, ?, ?)`,
			aggType, aggID, id, at).WithContext(ctx).Exec(); err != nil {
			iter.Close()
			return fmt.Errorf("scylla: migrate: index parked dead letter %d: %w", id, err)
		}
		indexed[outbox.AggregateKey{Type: aggType, ID: aggID}] = true
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("scylla: migrate: read the dead letters of the earlier layout: %w", err)
	}
	for key := range indexed {
		var n int
		if err := session.Query(`SELECT count(*) FROM `+ks+`.parked_dead_letters WHERE aggregatetype = ? AND aggregateid = ?`, key.Type, key.ID).
			WithContext(ctx).Scan(&n); err != nil {
			return fmt.Errorf("scylla: migrate: count the parked dead letters of %s: %w", key, err)
		}
		if _, err := session.Query(`UPDATE `+ks+`.parked_aggregates SET parked_events = ? WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`,
			n, key.Type, key.ID).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
			return fmt.Errorf("scylla: migrate: count the parked dead letters of %s: %w", key, err)
		}
	}
	return nil
}

// readDeadLetters reads the entries of one partition with afterID < id <
// below, in id order, page by page, keeping those keep accepts.
func (s *Store) readDeadLetters(ctx context.Context, bucket int32, afterID, below int64, keep func(outbox.DeadLetter) bool, limit int) ([]outbox.DeadLetter, error) {
	iter := s.session.Query(`SELECT `+deadLetterColumns+` FROM `+s.keyspace+`.dead_letter_queue WHERE bucket = ? AND id > ? AND id < ?`,
		bucket, afterID, below).WithContext(ctx).PageSize(500).Iter()
	return s.scanDeadLetters(iter, keep, limit)
}

// nextIDAfter is one more than the largest id handed out.
func (s *Store) nextIDAfter(ctx context.Context) (int64, error) {
	var next int64
	err := s.session.Query(`SELECT next FROM ` + s.keyspace + `.outbox_sequences WHERE name = 'dead_letter'`).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&next)
	if errors.Is(err, gocql.ErrNotFound) {
		return 1, nil
	}
	return next, err
}

// listDeadLetters returns the entries with id > afterID that keep
// accepts, in id order, up to limit (negative: all), reading partition by
// partition. Each id range is read in its own partition and in bucket 0,
// where a relay of an earlier release may still have written it.
func (s *Store) listDeadLetters(ctx context.Context, afterID int64, keep func(outbox.DeadLetter) bool, limit int) ([]outbox.DeadLetter, error) {
	from, err := s.bucketsFrom(ctx)
	if err != nil {
		return nil, err
	}
	next, err := s.nextIDAfter(ctx)
	if err != nil {
		return nil, err
	}
	var out []outbox.DeadLetter
	want := func() int {
		if limit < 0 {
			return -1
		}
		return limit - len(out)
	}
	if afterID+1 < from {
		got, err := s.readDeadLetters(ctx, 0, afterID, from, keep, want())
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	for lo := max(afterID+1, from); lo < next && (limit < 0 || len(out) < limit); {
		bucket := int32(lo/s.dlqBucketSize + 1)
		hi := (lo/s.dlqBucketSize + 1) * s.dlqBucketSize
		got, err := s.readDeadLetters(ctx, bucket, lo-1, hi, keep, want())
		if err != nil {
			return nil, err
		}
		late, err := s.readDeadLetters(ctx, 0, lo-1, hi, keep, want())
		if err != nil {
			return nil, err
		}
		got = append(got, late...)
		slices.SortFunc(got, func(a, b outbox.DeadLetter) int { return cmp.Compare(a.ID, b.ID) })
		if n := want(); n >= 0 && len(got) > n {
			got = got[:n]
		}
		out = append(out, got...)
		lo = hi
	}
	return out, nil
}

// AddDeadLetter implements outbox.DeadLetterStore. The index row goes in
// before the entry: a crash between them leaves an index row naming no
// entry, which readers skip, rather than an entry no reader finds (which
// the relay, reading the event again, would add a second time).
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
		bucket, err := s.bucketOf(ctx, out.ID)
		if err != nil {
			return dl, err
		}
		if err := s.session.Query(`INSERT INTO `+s.keyspace+`.parked_dead_letters (aggregatetype, aggregateid, id, parked_at) VALUES (?, ?, ?, ?)`,
			m.AggregateType, m.AggregateID, out.ID, micros(out.FirstFailedAt)).WithContext(ctx).Exec(); err != nil {
			return dl, fmt.Errorf("scylla: dead-letter %s: index: %w", m.ID, err)
		}
		out.Status = outbox.StatusParked
		err = s.session.Query(`INSERT INTO `+s.keyspace+`.dead_letter_queue (bucket, `+deadLetterColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')`,
			bucket, out.ID, gocql.UUID(m.ID), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), m.Headers,
			micros(m.Timestamp), out.Error, out.FailureCount, micros(out.FirstFailedAt), micros(out.LastFailedAt),
			string(outbox.StatusParked), out.ParkedBehind, out.ReplayCount).WithContext(ctx).Exec()
		if err != nil {
			return dl, fmt.Errorf("scylla: dead-letter %s: %w", m.ID, err)
		}
		parked = append(parked, out)
	}
	// Also when the entry existed: a crash may have come between the
	// writes, and parking again is a no-op.
	if _, err := s.session.Query(`INSERT INTO `+s.keyspace+`.parked_aggregates
		(aggregatetype, aggregateid, parked_at, pending_action, pending_entry, reason, requested_at, last_error, parked_events)
		VALUES (?, ?, ?, '', 0, '', 0, '', ?) IF NOT EXISTS`, m.AggregateType, m.AggregateID, micros(out.FirstFailedAt), len(parked)).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return dl, fmt.Errorf("scylla: park %s: %w", m.Key(), err)
	}
	if err := s.countParked(ctx, m.Key(), len(parked)); err != nil {
		return dl, err
	}
	return out, nil
}

// countParked records how many entries an aggregate has parked, for the
// listing of parked aggregates; a lightweight transaction, as every write
// of a parked aggregate's row is.
func (s *Store) countParked(ctx context.Context, key outbox.AggregateKey, n int) error {
	if _, err := s.session.Query(`UPDATE `+s.keyspace+`.parked_aggregates SET parked_events = ? WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`,
		n, key.Type, key.ID).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: count the parked events of %s: %w", key, err)
	}
	return nil
}

// ParkedAggregates implements outbox.DeadLetterStore. The table holds
// only parked aggregates, each with its count, so the relay's poll reads
// little, and no dead-letter entry.
func (s *Store) ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error) {
	iter := s.session.Query(`SELECT aggregatetype, aggregateid, parked_at, pending_action, pending_entry, reason, requested_at, last_error, parked_events
		FROM ` + s.keyspace + `.parked_aggregates`).WithContext(ctx).Consistency(gocql.LocalSerial).PageSize(500).Iter()
	var out []outbox.ParkedAggregate
	var uncounted []int
	var p outbox.ParkedAggregate
	var parkedAt, requested int64
	var pending string
	var count *int
	for iter.Scan(&p.Key.Type, &p.Key.ID, &parkedAt, &pending, &p.PendingEntry, &p.Reason, &requested, &p.LastError, &count) {
		p.ParkedAt, p.Pending, p.RequestedAt, p.ParkedEvents = fromMicros(parkedAt), outbox.Action(pending), nil, 0
		if requested != 0 {
			t := fromMicros(requested)
			p.RequestedAt = &t
		}
		if count == nil {
			uncounted = append(uncounted, len(out)) // parked by an earlier release
		} else {
			p.ParkedEvents = *count
		}
		out = append(out, p)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: parked aggregates: %w", err)
	}
	for _, i := range uncounted {
		msgs, err := s.ParkedMessages(ctx, out[i].Key)
		if err != nil {
			return nil, fmt.Errorf("scylla: parked aggregates: %w", err)
		}
		out[i].ParkedEvents = len(msgs)
	}
	slices.SortFunc(out, func(a, b outbox.ParkedAggregate) int {
		return cmp.Or(a.ParkedAt.Compare(b.ParkedAt), cmp.Compare(a.Key.Type, b.Key.Type), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	return out, nil
}

// ParkedMessages implements outbox.DeadLetterStore: the aggregate's
// entries its index names, in id order. An index row whose entry is
// missing (a crash between the two writes) or no longer parked is skipped
// and removed.
func (s *Store) ParkedMessages(ctx context.Context, key outbox.AggregateKey) ([]outbox.DeadLetter, error) {
	iter := s.session.Query(`SELECT id, WRITETIME(parked_at) FROM `+s.keyspace+`.parked_dead_letters WHERE aggregatetype = ? AND aggregateid = ?`,
		key.Type, key.ID).WithContext(ctx).PageSize(500).Iter()
	type indexed struct{ id, written int64 }
	var ids []indexed
	var x indexed
	for iter.Scan(&x.id, &x.written) {
		ids = append(ids, x)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: parked messages of %s: %w", key, err)
	}
	var out []outbox.DeadLetter
	for _, x := range ids {
		d, err := s.getDeadLetter(ctx, x.id)
		switch {
		case err == nil && d.Status == outbox.StatusParked && d.Message.Key() == key:
			out = append(out, d.DeadLetter)
			continue
		case err != nil && !errors.Is(err, outbox.ErrNotFound):
			return nil, fmt.Errorf("scylla: parked messages of %s: %w", key, err)
		}
		s.unindex(ctx, key, x.id, x.written)
	}
	return out, nil
}

// unindex removes an index row written at written (µs), with a later
// timestamp whatever this instance's clock says; best effort.
func (s *Store) unindex(ctx context.Context, key outbox.AggregateKey, id, written int64) {
	_ = s.session.Query(`DELETE FROM `+s.keyspace+`.parked_dead_letters USING TIMESTAMP ? WHERE aggregatetype = ? AND aggregateid = ? AND id = ?`,
		max(time.Now().UnixMicro(), written+1), key.Type, key.ID, id).WithContext(ctx).Exec()
}

// ResolveDeadLetter implements outbox.DeadLetterStore.
func (s *Store) ResolveDeadLetter(ctx context.Context, id int64, status outbox.DeadLetterStatus, note string) error {
	d, err := s.getDeadLetter(ctx, id)
	if err != nil {
		return err
	}
	if status == outbox.StatusReplayed {
		d.ReplayCount++
	}
	err = s.session.Query(`UPDATE `+s.keyspace+`.dead_letter_queue SET status = ?, resolved_at = ?, resolution = ?, replay_count = ?
		WHERE bucket = ? AND id = ?`, string(status), micros(time.Now()), note, d.ReplayCount, d.bucket, id).WithContext(ctx).Exec()
	if err != nil {
		return fmt.Errorf("scylla: resolve dead letter %d: %w", id, err)
	}
	key := d.Message.Key()
	var written int64
	if err := s.session.Query(`SELECT WRITETIME(parked_at) FROM `+s.keyspace+`.parked_dead_letters WHERE aggregatetype = ? AND aggregateid = ? AND id = ?`,
		key.Type, key.ID, id).WithContext(ctx).Scan(&written); err == nil {
		s.unindex(ctx, key, id, written)
	}
	left, err := s.ParkedMessages(ctx, key)
	if err != nil {
		return err
	}
	return s.countParked(ctx, key, len(left))
}

// CompleteAction implements outbox.DeadLetterStore.
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

// FailAction implements outbox.DeadLetterStore.
func (s *Store) FailAction(ctx context.Context, key outbox.AggregateKey, entryID int64, cause string) error {
	if _, err := s.session.Query(`UPDATE `+s.keyspace+`.parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = 0,
		last_error = ? WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`, cause, key.Type, key.ID).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: fail action on %s: %w", key, err)
	}
	if entryID == 0 {
		return nil // a refused request charges no entry
	}
	d, err := s.getDeadLetter(ctx, entryID)
	if err != nil {
		return err
	}
	err = s.session.Query(`UPDATE `+s.keyspace+`.dead_letter_queue SET replay_count = ?, failure_count = ?, error = ?, last_failed_at = ?
		WHERE bucket = ? AND id = ?`, d.ReplayCount+1, d.FailureCount+1, cause, micros(time.Now()), d.bucket, entryID).WithContext(ctx).Exec()
	if err != nil {
		return fmt.Errorf("scylla: fail action on %s: %w", key, err)
	}
	return nil
}

// RequestAction implements outbox.ActionRequester.
func (s *Store) RequestAction(ctx context.Context, key outbox.AggregateKey, req outbox.ActionRequest) error {
	applied, err := s.session.Query(`UPDATE `+s.keyspace+`.parked_aggregates SET pending_action = ?, pending_entry = ?, reason = ?, requested_at = ?
		WHERE aggregatetype = ? AND aggregateid = ? IF EXISTS`, string(req.Action), req.Entry, req.Reason, micros(time.Now()), key.Type, key.ID).
		WithContext(ctx).MapScanCAS(map[string]any{})
	if err != nil {
		return fmt.Errorf("scylla: request %s on %s: %w", req.Action, key, err)
	}
	if !applied {
		return fmt.Errorf("scylla: %s: %w", key, outbox.ErrNotParked)
	}
	return nil
}

// ListDeadLetters returns entries matching f, oldest first; a negative
// Limit means no limit. Filters are applied while paging through the
// partitions in id order.
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
	if f.OmitPayload { // CQL has no length(): read, then leave out
		for i := range out {
			out[i] = out[i].WithoutPayload()
		}
	}
	return out, nil
}

// GetDeadLetter returns one entry or outbox.ErrNotFound.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	d, err := s.getDeadLetter(ctx, id)
	return d.DeadLetter, err
}

// storedDeadLetter is an entry and the partition it was found in.
type storedDeadLetter struct {
	outbox.DeadLetter
	bucket int32
}

// getDeadLetter reads entry id from its partition, or from bucket 0,
// where a relay of an earlier release may have written it.
func (s *Store) getDeadLetter(ctx context.Context, id int64) (storedDeadLetter, error) {
	bucket, err := s.bucketOf(ctx, id)
	if err != nil {
		return storedDeadLetter{}, err
	}
	for _, b := range slices.Compact([]int32{bucket, 0}) {
		iter := s.session.Query(`SELECT `+deadLetterColumns+` FROM `+s.keyspace+`.dead_letter_queue WHERE bucket = ? AND id = ?`, b, id).
			WithContext(ctx).Iter()
		got, err := s.scanDeadLetters(iter, func(outbox.DeadLetter) bool { return true }, 1)
		if err != nil {
			return storedDeadLetter{}, fmt.Errorf("scylla: dead letter %d: %w", id, err)
		}
		if len(got) > 0 {
			return storedDeadLetter{got[0], b}, nil
		}
	}
	return storedDeadLetter{}, fmt.Errorf("scylla: dead letter %d: %w", id, outbox.ErrNotFound)
}
