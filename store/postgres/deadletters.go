package postgres

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/outbox"
)

var (
	_ outbox.DeadLetterStore = (*Store)(nil)
	_ outbox.ActionRequester = (*Store)(nil)
)

const deadLetterColumns = `id, event_id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp,
	error, failure_count, first_failed_at, last_failed_at, status, parked_behind, replay_count, resolved_at, resolution`

// sizedColumns are deadLetterColumns with the payload's length in bytes
// in place of the payload (DeadLetterFilter.OmitPayload): the payload is
// not sent.
var sizedColumns = strings.Replace(deadLetterColumns, "payload", "to_jsonb(octet_length(payload::text))", 1)

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

func scanDeadLetter(row pgx.Row) (outbox.DeadLetter, error) {
	var d outbox.DeadLetter
	var payload, headers []byte
	var ts time.Time
	if err := row.Scan(&d.ID, &d.Message.ID, &d.Message.AggregateType, &d.Message.AggregateID, &d.Message.Type,
		&d.Message.Sequence, &payload, &headers, &ts, &d.Error, &d.FailureCount, &d.FirstFailedAt, &d.LastFailedAt,
		&d.Status, &d.ParkedBehind, &d.ReplayCount, &d.ResolvedAt, &d.Resolution); err != nil {
		return d, err
	}
	d.FirstFailedAt, d.LastFailedAt = d.FirstFailedAt.UTC(), d.LastFailedAt.UTC()
	if d.ResolvedAt != nil {
		t := d.ResolvedAt.UTC()
		d.ResolvedAt = &t
	}
	return d, scanMessage(&d.Message, storedPayload(payload), headers, ts)
}

// The payload column is JSONB, but a table read through a mapping may
// hold text, bytes or NULL, which it refuses: the relay would retry such
// a dead letter forever, its aggregate stalled. Those are kept as a JSON
// object under nonJSONKey, their bytes in base64, and given back as they
// were, so a replay publishes them unchanged.
const nonJSONKey = "outbox.nonjson.payload"

func payloadToStore(p []byte) []byte {
	if p != nil && json.Valid(p) {
		return p
	}
	var v *string
	if p != nil {
		s := base64.StdEncoding.EncodeToString(p)
		v = &s
	}
	b, _ := json.Marshal(map[string]*string{nonJSONKey: v})
	return b
}

func storedPayload(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte(`{"`+nonJSONKey+`"`)) {
		return b
	}
	var v map[string]*string
	if json.Unmarshal(b, &v) != nil || len(v) != 1 {
		return b
	}
	s, ok := v[nonJSONKey]
	if !ok {
		return b
	}
	if s == nil {
		return nil
	}
	p, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		return b
	}
	return p
}

// AddDeadLetter implements outbox.DeadLetterStore.
func (s *Store) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	m := dl.Message
	var out outbox.DeadLetter
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		existing, err := scanDeadLetter(tx.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM outbox_dead_letters
			WHERE event_id = $1 AND status = 'parked'`, m.ID))
		if err == nil {
			out = existing
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if dl.ParkedBehind == "" {
			var head string
			err := tx.QueryRow(ctx, `SELECT event_id::text FROM outbox_dead_letters WHERE aggregatetype = $1 AND aggregateid = $2
				AND status = 'parked' ORDER BY id LIMIT 1`, m.AggregateType, m.AggregateID).Scan(&head)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			dl.ParkedBehind = head
		}
		headers, err := headersJSON(m.Headers)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO outbox_dead_letters
			(event_id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp,
			 error, failure_count, first_failed_at, last_failed_at, status, parked_behind)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'parked', $13) RETURNING id`,
			m.ID, m.AggregateType, m.AggregateID, m.Type, m.Sequence, payloadToStore(m.Payload), headers, m.Timestamp,
			dl.Error, dl.FailureCount, dl.FirstFailedAt, dl.LastFailedAt, dl.ParkedBehind).Scan(&dl.ID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO outbox_parked_aggregates (aggregatetype, aggregateid, parked_at)
			VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, m.AggregateType, m.AggregateID, dl.FirstFailedAt); err != nil {
			return err
		}
		dl.Status = outbox.StatusParked
		out = dl
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("postgres: dead-letter %s: %w", m.ID, err)
	}
	return out, nil
}

// ParkedAggregates implements outbox.DeadLetterStore.
func (s *Store) ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error) {
	rows, err := s.pool.Query(ctx, `SELECT p.aggregatetype, p.aggregateid, p.parked_at, p.pending_action, p.pending_entry, p.reason,
		p.requested_at, p.last_error,
		(SELECT count(*) FROM outbox_dead_letters d WHERE d.aggregatetype = p.aggregatetype
			AND d.aggregateid = p.aggregateid AND d.status = 'parked')
		FROM outbox_parked_aggregates p ORDER BY p.parked_at, p.aggregatetype, p.aggregateid`)
	if err != nil {
		return nil, fmt.Errorf("postgres: parked aggregates: %w", err)
	}
	defer rows.Close()
	var out []outbox.ParkedAggregate
	for rows.Next() {
		var p outbox.ParkedAggregate
		var pending string
		if err := rows.Scan(&p.Key.Type, &p.Key.ID, &p.ParkedAt, &pending, &p.PendingEntry, &p.Reason, &p.RequestedAt, &p.LastError, &p.ParkedEvents); err != nil {
			return nil, fmt.Errorf("postgres: parked aggregates: %w", err)
		}
		p.Pending = outbox.Action(pending)
		p.ParkedAt = p.ParkedAt.UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// ParkedMessages implements outbox.DeadLetterStore.
func (s *Store) ParkedMessages(ctx context.Context, key outbox.AggregateKey) ([]outbox.DeadLetter, error) {
	return s.ListDeadLetters(ctx, outbox.DeadLetterFilter{Aggregate: &key, Status: outbox.StatusParked, Limit: -1})
}

// ResolveDeadLetter implements outbox.DeadLetterStore.
func (s *Store) ResolveDeadLetter(ctx context.Context, id int64, status outbox.DeadLetterStatus, note string) error {
	bump := 0
	if status == outbox.StatusReplayed {
		bump = 1
	}
	tag, err := s.pool.Exec(ctx, `UPDATE outbox_dead_letters SET status = $1, resolved_at = now(), resolution = $2,
		replay_count = replay_count + $3 WHERE id = $4`, string(status), note, bump, id)
	if err != nil {
		return fmt.Errorf("postgres: resolve dead letter %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	return nil
}

// CompleteAction implements outbox.DeadLetterStore.
func (s *Store) CompleteAction(ctx context.Context, key outbox.AggregateKey) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM outbox_parked_aggregates p WHERE p.aggregatetype = $1 AND p.aggregateid = $2
			AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters d WHERE d.aggregatetype = $1 AND d.aggregateid = $2 AND d.status = 'parked')`,
			key.Type, key.ID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE outbox_parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = NULL
			WHERE aggregatetype = $1 AND aggregateid = $2`, key.Type, key.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: complete action on %s: %w", key, err)
	}
	return nil
}

// FailAction implements outbox.DeadLetterStore.
func (s *Store) FailAction(ctx context.Context, key outbox.AggregateKey, entryID int64, cause string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE outbox_parked_aggregates SET pending_action = '', pending_entry = 0, reason = '', requested_at = NULL,
			last_error = $1 WHERE aggregatetype = $2 AND aggregateid = $3`, cause, key.Type, key.ID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE outbox_dead_letters SET replay_count = replay_count + 1, failure_count = failure_count + 1,
			error = $1, last_failed_at = now() WHERE id = $2`, cause, entryID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: fail action on %s: %w", key, err)
	}
	return nil
}

// RequestAction implements outbox.ActionRequester.
func (s *Store) RequestAction(ctx context.Context, key outbox.AggregateKey, req outbox.ActionRequest) error {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox_parked_aggregates SET pending_action = $1, pending_entry = $2, reason = $3, requested_at = now()
		WHERE aggregatetype = $4 AND aggregateid = $5`, string(req.Action), req.Entry, req.Reason, key.Type, key.ID)
	if err != nil {
		return fmt.Errorf("postgres: request %s on %s: %w", req.Action, key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", key, outbox.ErrNotParked)
	}
	return nil
}

// ListDeadLetters returns entries matching f, oldest first; a negative
// Limit means no limit.
func (s *Store) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	var where []string
	var args []any
	add := func(cond string, a ...any) {
		for _, v := range a {
			args = append(args, v)
			cond = strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1)
		}
		where = append(where, cond)
	}
	add("id > ?", f.AfterID)
	if f.Aggregate != nil {
		add("aggregatetype = ? AND aggregateid = ?", f.Aggregate.Type, f.Aggregate.ID)
	}
	if f.Type != "" {
		add("type = ?", f.Type)
	}
	if f.Status != "" {
		add("status = ?", string(f.Status))
	}
	if !f.Since.IsZero() {
		add("last_failed_at >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		add("last_failed_at < ?", f.Until)
	}
	limit := ""
	switch {
	case f.Limit == 0:
		limit = " LIMIT 100"
	case f.Limit > 0:
		limit = fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	cols := deadLetterColumns
	if f.OmitPayload {
		cols = sizedColumns
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cols+` FROM outbox_dead_letters WHERE `+strings.Join(where, " AND ")+` ORDER BY id`+limit, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []outbox.DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err == nil && f.OmitPayload {
			err = sized(&d)
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: list dead letters: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDeadLetter returns one entry or outbox.ErrNotFound.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	d, err := scanDeadLetter(s.pool.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM outbox_dead_letters WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("postgres: dead letter %d: %w", id, outbox.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("postgres: dead letter %d: %w", id, err)
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
	types, ids := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		types[i], ids[i] = k.Type, k.ID
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sizedColumns+` FROM (SELECT *, row_number() OVER
		(PARTITION BY aggregatetype, aggregateid ORDER BY id) AS nth FROM outbox_dead_letters
		WHERE status = 'parked' AND (aggregatetype, aggregateid) IN (SELECT * FROM unnest($1::text[], $2::text[]))) d
		WHERE nth <= $3 ORDER BY id`, types, ids, perAggregate)
	if err != nil {
		return nil, fmt.Errorf("postgres: parked events: %w", err)
	}
	defer rows.Close()
	var out []outbox.DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err == nil {
			err = sized(&d)
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: parked events: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
