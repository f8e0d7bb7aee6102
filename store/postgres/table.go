package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/mapping"
)

// pgTable is a table as the catalog describes it: what a mapping is
// checked against when a source starts.
type pgTable struct {
	oid          uint32
	schema, name string
	cols         []pgColumn
}

type pgColumn struct {
	mapping.Column
	typeOID   uint32
	base      string // the type's name, a domain's base type's
	generated bool   // not carried by logical replication (PostgreSQL 15)
	def       string // the default expression, "" for none
}

// String is the table's name in messages and checkpoint names.
func (t *pgTable) String() string { return t.schema + "." + t.name }

func (t *pgTable) quoted() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// columns describes the table's columns to the mapping; CDC leaves out
// the generated ones, which the stream does not carry.
func (t *pgTable) columns(cdc bool) []mapping.Column {
	var out []mapping.Column
	for _, c := range t.cols {
		if !(cdc && c.generated) {
			out = append(out, c.Column)
		}
	}
	return out
}

func (t *pgTable) column(name string) (pgColumn, bool) {
	for _, c := range t.cols {
		if c.Name == name {
			return c, true
		}
	}
	return pgColumn{}, false
}

// describe looks the mapped table up (an unqualified name through the
// search path, as the writers' statements do) and reads its columns.
func (s *Store) describe(ctx context.Context, m mapping.Mapping) (*pgTable, error) {
	schema, name := m.SchemaTable()
	ident := pgx.Identifier{name}
	if schema != "" {
		ident = pgx.Identifier{schema, name}
	}
	t := &pgTable{}
	var relkind string
	err := s.pool.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname, c.relkind::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, ident.Sanitize()).
		Scan(&t.oid, &t.schema, &t.name, &relkind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: %w: %w: table %s does not exist (%s)", mapping.ErrInvalid, mapping.ErrNoTable, m.Table, mapping.KeyTable)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: look up table %s: %w", m.Table, err)
	}
	switch relkind {
	case "r":
	case "p":
		return nil, fmt.Errorf("postgres: %w: %w: %s is a partitioned table, which the relay does not read yet", mapping.ErrInvalid, mapping.ErrNoTable, t)
	default:
		return nil, fmt.Errorf("postgres: %w: %w: %s is not a table (relkind %s)", mapping.ErrInvalid, mapping.ErrNoTable, t, relkind)
	}
	rows, err := s.pool.Query(ctx, `SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), t.typtype::text,
			coalesce(b.typname, t.typname)::text, a.attgenerated <> '', coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, t.oid)
	if err != nil {
		return nil, fmt.Errorf("postgres: columns of %s: %w", t, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c pgColumn
		var typtype string
		if err := rows.Scan(&c.Name, &c.typeOID, &c.Type, &typtype, &c.base, &c.generated, &c.def); err != nil {
			return nil, fmt.Errorf("postgres: columns of %s: %w", t, err)
		}
		c.Kind, c.Format = kindOf(typtype, c.base)
		t.cols = append(t.cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: columns of %s: %w", t, err)
	}
	return t, nil
}

// kindOf maps a type (a domain's base type already) to what the mapping
// cares about.
func kindOf(typtype, name string) (mapping.Kind, mapping.Format) {
	if typtype == "e" {
		return mapping.KindText, mapping.FormatText // an enum's text is its label
	}
	switch name {
	case "text", "varchar", "bpchar", "name", "citext":
		return mapping.KindText, mapping.FormatText
	case "uuid":
		return mapping.KindUUID, mapping.FormatText
	case "int2", "int4", "int8":
		return mapping.KindInteger, mapping.FormatText
	case "json", "jsonb":
		return mapping.KindJSON, mapping.FormatText
	case "bytea":
		return mapping.KindBytes, mapping.FormatHex
	case "timestamp", "timestamptz":
		return mapping.KindTime, mapping.FormatText
	case "bool":
		return mapping.KindBool, mapping.FormatText
	case "xid8":
		return mapping.KindTxID, mapping.FormatText
	}
	return mapping.KindOther, mapping.FormatText
}

// normalize gives the mapping a source was configured with, outbox's own
// table when none.
func normalize(m *mapping.Mapping) (mapping.Mapping, error) {
	if m == nil {
		return mapping.Outbox(), nil
	}
	n, err := m.Normalize()
	if err != nil {
		return n, fmt.Errorf("postgres: %w", err)
	}
	return n, nil
}
