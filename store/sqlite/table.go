package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
)

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
// It reads in the order of the table's INTEGER PRIMARY KEY, which must be
// declared AUTOINCREMENT: SQLite has one writer at a time, so keys become
// visible in the order they were given and no row can commit behind one
// already read. Without AUTOINCREMENT SQLite gives the key of a deleted
// newest row again, and a row written after the relay read (and the
// writer deleted) the newest would be skipped: Table refuses such a
// table (mapping.ErrUnsafeOrder). Updates and deletes are never read: a
// row deleted before the relay read it is not published.
type Table struct {
	s     *Store
	name  string
	plan  *mapping.Plan
	query string
	count string
	used  []int
}

var _ poll.Fetcher = (*Table)(nil)

// Table checks cfg.Mapping against the table it names, and that the
// table can be polled safely. Errors wrap mapping.ErrInvalid, naming the
// table, the column and the key.
func (s *Store) Table(ctx context.Context, cfg TableConfig) (*Table, error) {
	m := mapping.Outbox()
	if cfg.Mapping != nil {
		var err error
		if m, err = cfg.Mapping.Normalize(); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	schema, name := m.SchemaTable()
	if schema == "" {
		schema = "main"
	}
	qualified := schema + "." + name
	qschema, qname := quote(schema), quote(name)
	var attached bool
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) > 0 FROM pragma_database_list WHERE name = ?`, schema).Scan(&attached); err != nil {
		return nil, fmt.Errorf("sqlite: look up table %s: %w", qualified, err)
	}
	var kind, ddl string
	err := sql.ErrNoRows
	if attached {
		err = s.db.QueryRowContext(ctx, `SELECT type, coalesce(sql, '') FROM `+qschema+`.sqlite_master WHERE name = ?`, name).Scan(&kind, &ddl)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: %w: %w: table %s does not exist (%s)", mapping.ErrInvalid, mapping.ErrNoTable, qualified, mapping.KeyTable)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: look up table %s: %w", qualified, err)
	}
	if kind != "table" {
		return nil, fmt.Errorf("sqlite: %w: %w: %s is a %s, not a table", mapping.ErrInvalid, mapping.ErrNoTable, qualified, kind)
	}
	rows, err := s.db.QueryContext(ctx, `PRAGMA `+qschema+`.table_info(`+qname+`)`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: columns of %s: %w", qualified, err)
	}
	var cols []mapping.Column
	var pks []string
	var rowidAlias string // the INTEGER PRIMARY KEY, which is the rowid
	for rows.Next() {
		var cid, notnull, pk int
		var col, decl string
		var dflt sql.NullString
		if err := rows.Scan(&cid, &col, &decl, &notnull, &dflt, &pk); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: columns of %s: %w", qualified, err)
		}
		cols = append(cols, mapping.Column{Name: col, Type: declared(decl), Kind: kindOf(decl), Format: mapping.FormatText})
		if pk > 0 {
			pks = append(pks, col)
			if strings.EqualFold(strings.TrimSpace(decl), "INTEGER") {
				rowidAlias = col
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: columns of %s: %w", qualified, err)
	}
	if len(pks) != 1 {
		rowidAlias = ""
	}
	position := m.PollPosition
	if position == "" {
		position = rowidAlias
	}
	unsafe := func(why string) error {
		return fmt.Errorf("sqlite: %w: %w: table %s: %s. Polling reads in the order of an INTEGER PRIMARY KEY AUTOINCREMENT, "+
			"the only key SQLite never gives twice: without it a row written after the newest was deleted could be skipped",
			mapping.ErrInvalid, mapping.ErrUnsafeOrder, qualified, why)
	}
	switch {
	case strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID"):
		return nil, unsafe("it is a WITHOUT ROWID table")
	case rowidAlias == "":
		return nil, unsafe("it has no INTEGER PRIMARY KEY")
	case position != rowidAlias:
		return nil, unsafe(fmt.Sprintf("%s %q is not its INTEGER PRIMARY KEY %q", mapping.KeyPollPosition, position, rowidAlias))
	case !strings.Contains(strings.ToUpper(ddl), "AUTOINCREMENT"):
		return nil, unsafe(fmt.Sprintf("its INTEGER PRIMARY KEY %q is not declared AUTOINCREMENT", rowidAlias))
	}
	plan, err := m.Resolve(qualified, cols, mapping.Order{Position: position})
	if err != nil {
		return nil, err
	}
	t := &Table{s: s, name: qualified, plan: plan}
	var exprs []string
	for _, c := range plan.Used() {
		if c == plan.Position.Index {
			continue
		}
		t.used = append(t.used, c)
		col := "t." + quote(cols[c].Name)
		if cols[c].Kind == mapping.KindBytes {
			exprs = append(exprs, col) // a BLOB's bytes as they are
		} else {
			// As SQLite holds it: the driver would make the text of a
			// DATETIME column a time.Time, and a float its own way.
			exprs = append(exprs, "CAST("+col+" AS TEXT)")
		}
	}
	pos := "t." + quote(position)
	t.query = `SELECT ` + pos + `, ` + strings.Join(exprs, ", ") + ` FROM ` + qschema + `.` + qname + ` AS t WHERE ` + pos + ` > ? ORDER BY ` + pos + ` LIMIT ?`
	t.count = `SELECT count(*) FROM ` + qschema + `.` + qname + ` AS t WHERE ` + pos + ` > ?`
	return t, nil
}

// quote makes a name an SQLite identifier.
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

func declared(decl string) string {
	if decl == "" {
		return "a column without a declared type"
	}
	return decl
}

// kindOf reads a declared type as SQLite's affinity rules do, with the
// names that say more than the affinity (UUID, JSON, DATETIME, BOOLEAN).
func kindOf(decl string) mapping.Kind {
	t := strings.ToUpper(strings.TrimSpace(decl))
	switch {
	case t == "UUID":
		return mapping.KindUUID
	case t == "JSON" || t == "JSONB":
		return mapping.KindJSON
	case strings.Contains(t, "INT"):
		return mapping.KindInteger
	case strings.Contains(t, "CHAR") || strings.Contains(t, "CLOB") || strings.Contains(t, "TEXT"):
		return mapping.KindText
	case t == "" || strings.Contains(t, "BLOB"):
		return mapping.KindBytes
	case strings.Contains(t, "DATE") || strings.Contains(t, "TIME"):
		return mapping.KindTime
	case strings.Contains(t, "BOOL"):
		return mapping.KindBool
	}
	return mapping.KindOther
}

// Name is the table's qualified name. Checkpoints and the relay lock of a
// polled table should be named after it: Table keeps its checkpoints
// under name@table.
func (t *Table) Name() string { return t.name }

func (t *Table) checkpoint(name string) string { return name + "@" + t.name }

// Fetch implements poll.Fetcher. A row the mapping cannot decode is
// handed over as a dead letter (Record.Err).
func (t *Table) Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error) {
	from, err := parsePosition(after)
	if err != nil {
		return nil, err
	}
	stmt, err := t.s.stmt(ctx, t.query)
	if err != nil {
		return nil, fmt.Errorf("sqlite: fetch %s after %d: %w", t.name, from, err)
	}
	rows, err := stmt.QueryContext(ctx, from, max)
	if err != nil {
		return nil, fmt.Errorf("sqlite: fetch %s after %d: %w", t.name, from, err)
	}
	defer rows.Close()
	// Without a timestamp column a row is stamped with the time it was
	// read: the nearest to Debezium's, the time of the change event.
	now := time.Now().UTC().Truncate(time.Microsecond)
	dec := t.plan.Decoder()
	vals := make([][]byte, len(t.plan.Columns()))
	raw := make([]any, 1+len(t.used))
	dest := make([]any, len(raw))
	for i := range raw {
		dest[i] = &raw[i]
	}
	// Reused from row to row (Decode copies what it keeps), and never
	// nil: an empty string is not NULL.
	bufs := make([][]byte, len(t.used))
	for i := range bufs {
		bufs[i] = make([]byte, 0, 64)
	}
	var out []outbox.Record
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("sqlite: fetch %s: %w", t.name, err)
		}
		pos, ok := raw[0].(int64)
		if !ok {
			return nil, fmt.Errorf("sqlite: fetch %s: position %v is not an integer", t.name, raw[0])
		}
		for i, c := range t.used {
			switch v := raw[1+i].(type) {
			case nil:
				vals[c] = nil
			case string:
				bufs[i] = append(bufs[i][:0], v...)
				vals[c] = bufs[i]
			case []byte: // database/sql's own copy
				if v == nil {
					v = []byte{}
				}
				vals[c] = v
			default:
				// SQLite's typing is dynamic: an uncast BLOB column may
				// hold a number. Its text, rather than an error that
				// would stop every row behind it.
				bufs[i] = fmt.Append(bufs[i][:0], v)
				vals[c] = bufs[i]
			}
		}
		p := strconv.FormatInt(pos, 10)
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
		return nil, fmt.Errorf("sqlite: fetch %s after %d: %w", t.name, from, err)
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
	from, err := parsePosition(pos)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := t.s.db.QueryRowContext(ctx, t.count, from).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: backlog of %s: %w", t.name, err)
	}
	return n, nil
}
