package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/mapping"
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

// TableConfig configures polling a table through a mapping.
type TableConfig struct {
	// Mapping names the table and its columns; nil reads outbox's own
	// table through the mapping (Store itself polls it faster).
	Mapping *mapping.Mapping
	Logger  *slog.Logger
}

// Table polls a table of the user's through a mapping: a poll.Fetcher,
// for poll.NewSource.
//
// It reads like Store.Fetch, in (txid, position) order and only rows
// whose txid is below the oldest running transaction: so a table needs
// two columns (table.field.poll.txid and table.field.poll.position; see
// PollSetupSQL): an xid8 defaulting to pg_current_xact_id(), and a unique
// integer filled in insert order. Without them it refuses to start
// (mapping.ErrUnsafeOrder): polling by a sequence alone skips a row whose
// transaction commits after a later one was read.
//
// Each aggregate's events come out in commit order when its writers'
// transaction ids follow their commit order, which the trigger of
// PollSetupSQL ensures whoever writes; without it, when writers take an
// aggregate's lock (or write its row) before anything else in their
// transaction. A row is read once every transaction of a lower id has
// ended, in any database of the server: one long transaction holds
// polling back until it ends. Updates and deletes are never read: a row
// deleted before the relay read it is not published.
type Table struct {
	s       *Store
	table   *pgTable
	plan    *mapping.Plan
	query   string
	count   string
	used    []int
	nvals   int
	ordered bool // the trigger of PollSetupSQL is installed
}

var _ poll.Fetcher = (*Table)(nil)

// Table checks cfg.Mapping against the table it names, and that the
// table can be polled safely. Errors wrap mapping.ErrInvalid, naming the
// table, the column and the key.
func (s *Store) Table(ctx context.Context, cfg TableConfig) (*Table, error) {
	m, err := normalize(cfg.Mapping)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	order := mapping.Order{Position: cmp.Or(m.PollPosition, "position"), TxID: cmp.Or(m.PollTxID, "txid")}
	table, err := s.describe(ctx, m)
	if err != nil {
		return nil, err
	}
	plan, err := m.Resolve(table.String(), table.columns(false), order)
	if err != nil {
		var ce *mapping.ColumnError
		if errors.As(err, &ce) && (ce.Column == order.TxID || ce.Column == order.Position) {
			err = fmt.Errorf("%w\npostgres: polling %s needs both columns, which no sequence alone can replace: a row whose transaction "+
				"commits after a later one was read would be skipped. Add them with the statements of postgres.PollSetupSQL "+
				"(outbox migrate --mapping ... --source poll applies them; with --print-sql it prints them), or read the table with CDC (--source cdc): %w", err, table, mapping.ErrUnsafeOrder)
		}
		return nil, err
	}
	if txid, _ := table.column(order.TxID); !strings.Contains(txid.def, "pg_current_xact_id()") {
		return nil, fmt.Errorf("postgres: %w: %w: table %s: column %q (%s) must default to pg_current_xact_id(), the transaction "+
			"that writes the row, or polling could skip it; its default is %q", mapping.ErrInvalid, mapping.ErrUnsafeOrder,
			table, order.TxID, mapping.KeyPollTxID, txid.def)
	}
	var unique, trigger bool
	err = s.pool.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			WHERE i.indrelid = $1 AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = $2),
		EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = $3 AND tgenabled <> 'D')`,
		table.oid, order.Position, triggerName(table.name)).Scan(&unique, &trigger)
	if err != nil {
		return nil, fmt.Errorf("postgres: indexes of %s: %w", table, err)
	}
	if !unique {
		return nil, fmt.Errorf("postgres: %w: %w: table %s: column %q (%s) needs a unique index of its own: "+
			"polling pages through a transaction's rows by it", mapping.ErrInvalid, mapping.ErrUnsafeOrder, table, order.Position, mapping.KeyPollPosition)
	}
	if !trigger && cfg.Mapping != nil {
		cfg.Logger.Warn("polling keeps an aggregate's events in commit order only if its writers take its lock before anything else "+
			"in their transaction; the trigger of postgres.PollSetupSQL makes it hold whoever writes", "table", table.String())
	}
	t := &Table{s: s, table: table, plan: plan, used: plan.Used(), nvals: len(plan.Columns()), ordered: trigger}
	exprs := make([]string, len(t.used))
	for i, c := range t.used {
		col, _ := table.column(plan.Columns()[c].Name)
		exprs[i] = selectText(col, "t."+pgx.Identifier{col.Name}.Sanitize())
	}
	txidCol, posCol := "t."+pgx.Identifier{order.TxID}.Sanitize(), "t."+pgx.Identifier{order.Position}.Sanitize()
	// ORDER BY names the table's columns: a bare name would mean the
	// selected text, which sorts "1000000" before "999999".
	t.query = `SELECT ` + txidCol + `::text, ` + posCol + `::text, ` + strings.Join(exprs, ", ") + `
		FROM ` + table.quoted() + ` AS t
		WHERE (` + txidCol + `, ` + posCol + `) > ($1::text::xid8, $2::bigint)
		  AND ` + txidCol + ` < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY ` + txidCol + `, ` + posCol + ` LIMIT $3`
	t.count = `SELECT count(*) FROM ` + table.quoted() + ` AS t WHERE (` + txidCol + `, ` + posCol + `) > ($1::text::xid8, $2::bigint)`
	return t, nil
}

// selectText is the SQL that gives a column's value in the text form the
// CDC stream carries (DateStyle ISO, TimeZone UTC, bytea_output hex)
// whatever the session's settings: the decoder reads both sources alike,
// and a header has the same value whichever source read it.
func selectText(c pgColumn, col string) string {
	switch c.base {
	case "bool":
		return `CASE WHEN ` + col + ` THEN 't' WHEN NOT ` + col + ` THEN 'f' END`
	case "bytea":
		return `'\x' || encode(` + col + `, 'hex')`
	case "timestamptz":
		return `rtrim(rtrim(to_char(` + col + ` AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '0'), '.') || '+00'`
	case "timestamp":
		return `rtrim(rtrim(to_char(` + col + `, 'YYYY-MM-DD HH24:MI:SS.US'), '0'), '.')`
	}
	return col + `::text`
}

func triggerName(table string) string { return "outbox_order_" + table }

// Name is the table's qualified name. Checkpoints and the relay lock of a
// polled table should be named after it: Table keeps its checkpoints
// under name@table.
func (t *Table) Name() string { return t.table.String() }

func (t *Table) checkpoint(name string) string { return name + "@" + t.table.String() }

// Fetch implements poll.Fetcher. A row the mapping cannot decode is
// handed over as a dead letter (Record.Err).
func (t *Table) Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error) {
	from, err := parsePollPos(after)
	if err != nil {
		return nil, err
	}
	rows, err := t.s.pool.Query(ctx, t.query, strconv.FormatUint(from.txid, 10), from.position, max)
	if err != nil {
		return nil, fmt.Errorf("postgres: fetch %s after %s: %w", t.table, from, err)
	}
	defer rows.Close()
	// Without a timestamp column a row is stamped with the time it was
	// read: the nearest to Debezium's, the time of the change event.
	now := time.Now().UTC().Truncate(time.Microsecond)
	dec := t.plan.Decoder()
	vals := make([][]byte, t.nvals)
	var out []outbox.Record
	for rows.Next() {
		raw := rows.RawValues()
		tx, err1 := strconv.ParseUint(string(raw[0]), 10, 64)
		pos, err2 := strconv.ParseInt(string(raw[1]), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("postgres: fetch %s: position (%q, %q)", t.table, raw[0], raw[1])
		}
		for i, c := range t.used {
			vals[c] = raw[2+i]
		}
		p := pollPos{tx, pos}.String()
		m, err := dec.Decode(vals, now)
		rec := outbox.Record{Message: m, Position: outbox.Position(p)}
		if err != nil {
			if !errors.Is(err, mapping.ErrRow) {
				return nil, err
			}
			rec.Message, rec.Err = t.plan.Undecodable(p, vals, m, err), err
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: fetch %s after %s: %w", t.table, from, err)
	}
	return out, nil
}

// LoadCheckpoint implements poll.Fetcher, under name@table.
func (t *Table) LoadCheckpoint(ctx context.Context, name string) (outbox.Position, error) {
	return t.s.LoadCheckpoint(ctx, t.checkpoint(name))
}

// SaveCheckpoint implements poll.Fetcher, under name@table.
func (t *Table) SaveCheckpoint(ctx context.Context, name string, pos outbox.Position) error {
	return t.s.SaveCheckpoint(ctx, t.checkpoint(name), pos)
}

// Backlog counts the table's rows after the named checkpoint.
func (t *Table) Backlog(ctx context.Context, name string) (int64, error) {
	pos, err := t.LoadCheckpoint(ctx, name)
	if err != nil {
		return 0, err
	}
	from, err := parsePollPos(pos)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := t.s.pool.QueryRow(ctx, t.count, strconv.FormatUint(from.txid, 10), from.position).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: backlog of %s: %w", t.table, err)
	}
	return n, nil
}

// PollSetupSQL is what makes a table pollable, for an operator to review
// and run, or for `outbox migrate --source poll --mapping ...` to apply
// (`--print-sql` prints it; the relay never runs it): the two ordering columns, their
// indexes, and a trigger that keeps each aggregate's events in commit
// order whoever writes them, as Store.Append does for outbox's own table
// (migration 0005), through the same outbox_aggregate_heads table, which
// it creates when missing: run it with the relay's search_path. Adding
// a column to a table that has rows rewrites it under an exclusive lock;
// existing rows get the adding transaction's id and are read first.
func PollSetupSQL(m mapping.Mapping) (string, error) {
	m, err := m.Normalize()
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	schema, name := m.SchemaTable()
	tbl := pgx.Identifier{name}
	fn := pgx.Identifier{triggerName(name)}
	if schema != "" {
		tbl, fn = pgx.Identifier{schema, name}, pgx.Identifier{schema, triggerName(name)}
	}
	pos := pgx.Identifier{cmp.Or(m.PollPosition, "position")}.Sanitize()
	txid := pgx.Identifier{cmp.Or(m.PollTxID, "txid")}.Sanitize()
	q := tbl.Sanitize()
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	return `ALTER TABLE ` + q + ` ADD COLUMN IF NOT EXISTS ` + pos + ` bigserial;
ALTER TABLE ` + q + ` ADD COLUMN IF NOT EXISTS ` + txid + ` xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE UNIQUE INDEX IF NOT EXISTS ` + pgx.Identifier{name + "_" + strings.Trim(pos, `"`)}.Sanitize() + ` ON ` + q + ` (` + pos + `);
CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{name + "_" + strings.Trim(txid, `"`) + "_" + strings.Trim(pos, `"`)}.Sanitize() + ` ON ` + q + ` (` + txid + `, ` + pos + `);
CREATE TABLE IF NOT EXISTS outbox_aggregate_heads (
    aggregatetype TEXT NOT NULL,
    aggregateid   TEXT NOT NULL,
    txid          XID8 NOT NULL,
    PRIMARY KEY (aggregatetype, aggregateid)
);
-- A row's txid becomes the greater of its transaction's id and its
-- aggregate's previous event's, under a row lock held until commit: an
-- aggregate's txids follow its commit order. The function keeps the
-- search_path these statements run with, where the heads table is, not
-- the writer's.
CREATE OR REPLACE FUNCTION ` + fn.Sanitize() + `() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $outbox$
BEGIN
    INSERT INTO outbox_aggregate_heads AS head (aggregatetype, aggregateid, txid)
    VALUES (` + lit(m.Table) + ` || '/' || NEW.` + pgx.Identifier{m.AggregateType}.Sanitize() + `::text, NEW.` + pgx.Identifier{m.EventKey}.Sanitize() + `::text, pg_current_xact_id())
    ON CONFLICT (aggregatetype, aggregateid) DO UPDATE SET txid = greatest(head.txid, excluded.txid)
    RETURNING head.txid INTO NEW.` + txid + `;
    RETURN NEW;
END
$outbox$;
CREATE OR REPLACE TRIGGER ` + pgx.Identifier{triggerName(name)}.Sanitize() + ` BEFORE INSERT ON ` + q + `
    FOR EACH ROW EXECUTE FUNCTION ` + fn.Sanitize() + `();
`, nil
}
