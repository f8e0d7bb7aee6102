package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
)

// The polling source reads in (txid, position) order, and only rows whose
// transaction id is below the oldest transaction still running
// (pg_snapshot_xmin). Every transaction below that horizon has finished
// and no new one can get a smaller id, so nothing can ever appear behind
// the cursor: a long transaction delays rows, it cannot make them be
// skipped, which is the failure of polling by offset alone (a sequence
// value is taken at insert, not at commit).
//
// A row's txid is not simply its writer's transaction id, which is taken
// at the first write rather than at commit: Append raises it to at least
// the txid of the aggregate's previous event, under a row lock that
// serialises an aggregate's appends until commit (see aggregateHead). So
// an aggregate's events come out in commit order whoever writes them, and
// a row's txid is never below its writer's, which keeps the horizon rule.

var _ poll.Fetcher = (*Store)(nil)

type pollPos struct {
	txid     uint64
	position int64
}

func parsePollPos(p outbox.Position) (pollPos, error) {
	if p == "" {
		return pollPos{}, nil
	}
	tx, pos, ok := strings.Cut(string(p), ":")
	a, err1 := strconv.ParseUint(tx, 10, 64)
	b, err2 := strconv.ParseInt(pos, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return pollPos{}, fmt.Errorf("postgres: bad poll position %q", p)
	}
	return pollPos{a, b}, nil
}

func (p pollPos) String() string {
	return strconv.FormatUint(p.txid, 10) + ":" + strconv.FormatInt(p.position, 10)
}

const messageColumns = `position, txid::text, id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp`

func scanRecord(rows pgx.Rows) (outbox.Message, int64, uint64, error) {
	var m outbox.Message
	var pos int64
	var txid string
	var payload, headers []byte
	var ts time.Time
	if err := rows.Scan(&pos, &txid, &m.ID, &m.AggregateType, &m.AggregateID, &m.Type, &m.Sequence, &payload, &headers, &ts); err != nil {
		return m, 0, 0, err
	}
	tx, err := strconv.ParseUint(txid, 10, 64)
	if err != nil {
		return m, 0, 0, err
	}
	return m, pos, tx, scanMessage(&m, payload, headers, ts)
}

// Fetch implements poll.Fetcher.
func (s *Store) Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error) {
	from, err := parsePollPos(after)
	if err != nil {
		return nil, err
	}
	// ORDER BY names the table's columns: a bare txid would mean the
	// selected txid::text, which sorts "1000000" before "999999".
	rows, err := s.pool.Query(ctx, `SELECT `+messageColumns+` FROM outbox
		WHERE (txid, position) > ($1::text::xid8, $2::bigint)
		  AND txid < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY outbox.txid, outbox.position LIMIT $3`, strconv.FormatUint(from.txid, 10), from.position, max)
	if err != nil {
		return nil, fmt.Errorf("postgres: fetch after %s: %w", from, err)
	}
	defer rows.Close()
	var out []outbox.Record
	for rows.Next() {
		m, pos, tx, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: fetch: %w", err)
		}
		out = append(out, outbox.Record{Message: m, Position: outbox.Position(pollPos{tx, pos}.String())})
	}
	return out, rows.Err()
}

// LoadCheckpoint implements poll.Fetcher.
func (s *Store) LoadCheckpoint(ctx context.Context, name string) (outbox.Position, error) {
	var pos string
	err := s.pool.QueryRow(ctx, `SELECT position FROM outbox_checkpoints WHERE name = $1`, name).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres: load checkpoint %q: %w", name, err)
	}
	return outbox.Position(pos), nil
}

// SaveCheckpoint implements poll.Fetcher.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, pos outbox.Position) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO outbox_checkpoints (name, position, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`, name, string(pos))
	if err != nil {
		return fmt.Errorf("postgres: save checkpoint %q at %s: %w", name, pos, err)
	}
	return nil
}

// Backlog counts outbox rows after the named polling checkpoint.
func (s *Store) Backlog(ctx context.Context, name string) (int64, error) {
	pos, err := s.LoadCheckpoint(ctx, name)
	if err != nil {
		return 0, err
	}
	from, err := parsePollPos(pos)
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE (txid, position) > ($1::text::xid8, $2::bigint)`,
		strconv.FormatUint(from.txid, 10), from.position).Scan(&n)
	return n, err
}

// PollHorizon is the transaction id below which every row was read and
// acknowledged by the polling relay named name: the cleaner's bound.
func (s *Store) PollHorizon(ctx context.Context, name string) (uint64, error) {
	pos, err := s.LoadCheckpoint(ctx, name)
	if err != nil {
		return 0, err
	}
	p, err := parsePollPos(pos)
	return p.txid, err
}
