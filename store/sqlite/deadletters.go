package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/outbox"
)

var (
	_ outbox.DeadLetterStore = (*Store)(nil)
	_ outbox.ActionRequester = (*Store)(nil)
)

func encodeHeaders(h map[string]string) (string, error) {
	if len(h) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("sqlite: encode headers: %w", err)
	}
	return string(b), nil
}

func fillMessage(m *outbox.Message, id, payload, headers string, ts int64) error {
	var err error
	if m.ID, err = uuid.Parse(id); err != nil {
		return fmt.Errorf("event id %q: %w", id, err)
	}
	m.Payload = json.RawMessage(payload)
	if headers != "" && headers != "{}" {
		if err := json.Unmarshal([]byte(headers), &m.Headers); err != nil {
			return fmt.Errorf("headers of %s: %w", id, err)
		}
	}
	m.Timestamp = time.UnixMicro(ts).UTC()
	return nil
}

const deadLetterColumns = `id, event_id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp,
	error, failure_count, first_failed_at, last_failed_at, status, parked_behind, replay_count, resolved_at, resolution`

// sizedColumns are deadLetterColumns with the payload's length in bytes
// in place of the payload (DeadLetterFilter.OmitPayload): the payload is
// not sent.
var sizedColumns = strings.Replace(deadLetterColumns, "payload", "length(CAST(payload AS BLOB))", 1)

// sized turns the length sizedColumns read in place of d's payload into
// PayloadSize.
func sized(d *outbox.DeadLetter) error {
	n, err := strconv.Atoi(string(d.Message.Payload))
	if err != nil {
		return fmt.Errorf("payload size %q: %w", d.Message.Payload, err)
	}
	d.Message.Payload, d.PayloadSize = nil, n
	return nil
}

func scanDeadLetter(sc interface{ Scan(...any) error }) (outbox.DeadLetter, error) {
	var d outbox.DeadLetter
	var eventID, payload, headers string
	var ts, first, last int64
	var resolved sql.NullInt64
	if err := sc.Scan(&d.ID, &eventID, &d.Message.AggregateType, &d.Message.AggregateID, &d.Message.Type,
		&d.Message.Sequence, &payload, &headers, &ts, &d.Error, &d.FailureCount, &first, &last,
		&d.Status, &d.ParkedBehind, &d.ReplayCount, &resolved, &d.Resolution); err != nil {
		return d, err
	}
	if err := fillMessage(&d.Message, eventID, payload, headers, ts); err != nil {
		return d, err
	}
	d.FirstFailedAt, d.LastFailedAt = time.UnixMicro(first).UTC(), time.UnixMicro(last).UTC()
	if resolved.Valid {
		t := time.UnixMicro(resolved.Int64).UTC()
		d.ResolvedAt = &t
	}
	return d, nil
}

// AddDeadLetter implements outbox.DeadLetterStore.
func (s *Store) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	var out outbox.DeadLetter
	m := dl.Message
	err := s.transact(ctx, func(tx *sql.Tx) error {
		existing, err := scanDeadLetter(tx.QueryRowContext(ctx, `SELECT `+deadLetterColumns+`
			FROM outbox_dead_letters WHERE event_id = ? AND status = 'parked'`, m.ID.String()))
		if err == nil {
			out = existing
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if dl.ParkedBehind == "" {
			var head string
			err := tx.QueryRowContext(ctx, `SELECT event_id FROM outbox_dead_letters
				WHERE aggregatetype = ? AND aggregateid = ? AND status = 'parked' ORDER BY id LIMIT 1`,
				m.AggregateType, m.AggregateID).Scan(&head)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			dl.ParkedBehind = head
		}
		headers, err := encodeHeaders(m.Headers)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO outbox_dead_letters
			(event_id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp,
			 error, failure_count, first_failed_at, last_failed_at, status, parked_behind)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'parked', ?)`,
			m.ID.String(), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), headers,
			m.Timestamp.UnixMicro(), dl.Error, dl.FailureCount, dl.FirstFailedAt.UnixMicro(),
			dl.LastFailedAt.UnixMicro(), dl.ParkedBehind)
		if err != nil {
			return err
		}
		if dl.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_parked_aggregates (aggregatetype, aggregateid, parked_at)
			VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, m.AggregateType, m.AggregateID, dl.FirstFailedAt.UnixMicro()); err != nil {
			return err
		}
		dl.Status = outbox.StatusParked
		out = dl
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("sqlite: dead-letter %s: %w", m.ID, err)
	}
	return out, nil
}

// ParkedAggregates implements outbox.DeadLetterStore.
func (s *Store) ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT p.aggregatetype, p.aggregateid, p.parked_at, p.pending_action,
		p.pending_entry, p.reason, p.requested_at, p.last_error,
		(SELECT count(*) FROM outbox_dead_letters d WHERE d.aggregatetype = p.aggregatetype
			AND d.aggregateid = p.aggregateid AND d.status = 'parked')
		FROM outbox_parked_aggregates p ORDER BY p.parked_at, p.aggregatetype, p.aggregateid`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: parked aggregates: %w", err)
	}
	defer rows.Close()
	var out []outbox.ParkedAggregate
	for rows.Next() {
		var p outbox.ParkedAggregate
		var parkedAt int64
		var requested sql.NullInt64
		if err := rows.Scan(&p.Key.Type, &p.Key.ID, &parkedAt, &p.Pending, &p.PendingEntry, &p.Reason, &requested, &p.LastError, &p.ParkedEvents); err != nil {
			return nil, fmt.Errorf("sqlite: parked aggregates: %w", err)
		}
		p.ParkedAt = time.UnixMicro(parkedAt).UTC()
		if requested.Valid {
			t := time.UnixMicro(requested.Int64).UTC()
			p.RequestedAt = &t
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ParkedMessages implements outbox.DeadLetterStore.
func (s *Store) ParkedMessages(ctx context.Context, key outbox.AggregateKey) ([]outbox.DeadLetter, error) {
	st := outbox.StatusParked
	return s.ListDeadLetters(ctx, outbox.DeadLetterFilter{Aggregate: &key, Status: st, Limit: -1})
}

// ResolveDeadLetter implements outbox.DeadLetterStore.
func (s *Store) ResolveDeadLetter(ctx context.Context, id int64, status outbox.DeadLetterStatus, note string) error {
	bump := 0
	if status == outbox.StatusReplayed {
		bump = 1
	}
	res, err := s.exec(ctx, `UPDATE outbox_dead_letters SET status = ?, resolved_at = ?, resolution = ?,
		replay_count = replay_count + ? WHERE id = ?`, status, time.Now().UnixMicro(), note, bump, id)
	if err != nil {
		return fmt.Errorf("sqlite: resolve dead letter %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	return nil
}

// CompleteAction implements outbox.DeadLetterStore.
func (s *Store) CompleteAction(ctx context.Context, key outbox.AggregateKey) error {
	err := s.transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox_parked_aggregates WHERE aggregatetype = ? AND aggregateid = ?
			AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters WHERE aggregatetype = ? AND aggregateid = ? AND status = 'parked')`,
			key.Type, key.ID, key.Type, key.ID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE outbox_parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = NULL
			WHERE aggregatetype = ? AND aggregateid = ?`, key.Type, key.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: complete action on %s: %w", key, err)
	}
	return nil
}

// FailAction implements outbox.DeadLetterStore.
func (s *Store) FailAction(ctx context.Context, key outbox.AggregateKey, entryID int64, cause string) error {
	err := s.transact(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE outbox_parked_aggregates SET pending_action = '', pending_entry = 0, reason = '',
			requested_at = NULL, last_error = ? WHERE aggregatetype = ? AND aggregateid = ?`, cause, key.Type, key.ID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE outbox_dead_letters SET replay_count = replay_count + 1,
			failure_count = failure_count + 1, error = ?, last_failed_at = ? WHERE id = ?`, cause, time.Now().UnixMicro(), entryID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: fail action on %s: %w", key, err)
	}
	return nil
}

// RequestAction implements outbox.ActionRequester.
func (s *Store) RequestAction(ctx context.Context, key outbox.AggregateKey, req outbox.ActionRequest) error {
	res, err := s.exec(ctx, `UPDATE outbox_parked_aggregates SET pending_action = ?, pending_entry = ?, reason = ?, requested_at = ?
		WHERE aggregatetype = ? AND aggregateid = ?`, req.Action, req.Entry, req.Reason, time.Now().UnixMicro(), key.Type, key.ID)
	if err != nil {
		return fmt.Errorf("sqlite: request %s on %s: %w", req.Action, key, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: %s: %w", key, outbox.ErrNotParked)
	}
	return nil
}

// ListDeadLetters returns entries matching f, oldest first. A negative
// Limit means no limit.
func (s *Store) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	var where []string
	var args []any
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	add("id > ?", f.AfterID)
	if f.Aggregate != nil {
		add("aggregatetype = ? AND aggregateid = ?", f.Aggregate.Type, f.Aggregate.ID)
	}
	if f.Type != "" {
		add("type = ?", f.Type)
	}
	if f.Status != "" {
		add("status = ?", f.Status)
	}
	if !f.Since.IsZero() {
		add("last_failed_at >= ?", f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		add("last_failed_at < ?", f.Until.UnixMicro())
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	cols := deadLetterColumns
	if f.OmitPayload {
		cols = sizedColumns
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM outbox_dead_letters WHERE `+
		strings.Join(where, " AND ")+` ORDER BY id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []outbox.DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err == nil && f.OmitPayload {
			err = sized(&d)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: list dead letters: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDeadLetter returns one entry or outbox.ErrNotFound.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	d, err := scanDeadLetter(s.db.QueryRowContext(ctx, `SELECT `+deadLetterColumns+` FROM outbox_dead_letters WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("sqlite: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("sqlite: dead letter %d: %w", id, err)
	}
	return d, nil
}

// ParkedEvents lists the parked dead letters of the aggregates keys, the
// first perAggregate of each in id order, without their payloads
// (PayloadSize set), in one query: the console's parked view.
func (s *Store) ParkedEvents(ctx context.Context, keys []outbox.AggregateKey, perAggregate int) ([]outbox.DeadLetter, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 2*len(keys)+1)
	values := make([]string, 0, len(keys))
	for _, k := range keys {
		values = append(values, "(?, ?)")
		args = append(args, k.Type, k.ID)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+sizedColumns+` FROM (SELECT *, row_number() OVER
		(PARTITION BY aggregatetype, aggregateid ORDER BY id) AS nth FROM outbox_dead_letters
		WHERE status = 'parked' AND (aggregatetype, aggregateid) IN (VALUES `+strings.Join(values, ", ")+`))
		WHERE nth <= ? ORDER BY id`, append(args, perAggregate)...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: parked events: %w", err)
	}
	defer rows.Close()
	var out []outbox.DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err == nil {
			err = sized(&d)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: parked events: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
