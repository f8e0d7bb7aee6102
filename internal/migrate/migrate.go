// Package migrate applies numbered SQL files (NNNN_name.sql) once each,
// recording them in outbox_schema_migrations, on PostgreSQL (pgx or
// database/sql) and SQLite. The stores, the outbox-only migrations and
// the inbox share it, so one database can hold any of them and a later
// run applies only what is missing.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// File is one migration.
type File struct {
	Version int
	Name    string
	Body    string
}

// Files reads the *.sql files at the root of each of sets, sorted by
// version. Two files with one version are an error: they would be
// recorded as one.
func Files(sets ...fs.FS) ([]File, error) {
	var out []File
	seen := map[int]string{}
	for _, set := range sets {
		entries, err := fs.ReadDir(set, ".")
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() || path.Ext(e.Name()) != ".sql" {
				continue
			}
			version, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
			if err != nil {
				return nil, fmt.Errorf("migrate: migration %s has no numeric prefix", e.Name())
			}
			if other, ok := seen[version]; ok {
				return nil, fmt.Errorf("migrate: migrations %s and %s share version %d", other, e.Name(), version)
			}
			seen[version] = e.Name()
			body, err := fs.ReadFile(set, e.Name())
			if err != nil {
				return nil, fmt.Errorf("migrate: %w", err)
			}
			out = append(out, File{Version: version, Name: e.Name(), Body: string(body)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// lockKey is the advisory lock that serialises migrations of one
// PostgreSQL database, so concurrent starts do not race.
const lockKey = 7261535

const pgTable = `CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
	version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`

// PgxConn is one PostgreSQL session: *pgx.Conn or *pgxpool.Conn.
type PgxConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Pgx applies files not yet applied on conn, each in its own transaction,
// under an advisory lock, and reports how many it applied.
func Pgx(ctx context.Context, conn PgxConn, files []File) (int, error) {
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)
	if _, err := conn.Exec(ctx, pgTable); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	applied := 0
	for _, f := range files {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM outbox_schema_migrations WHERE version = $1`, f.Version).Scan(&n); err != nil || n > 0 {
				return err
			}
			if _, err := tx.Exec(ctx, f.Body); err != nil {
				return err
			}
			applied++
			_, err := tx.Exec(ctx, `INSERT INTO outbox_schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`, f.Version, f.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrate: migration %s: %w", f.Name, err)
		}
	}
	return applied, nil
}

// Dialect is the SQL spoken through database/sql.
type Dialect int

const (
	Postgres Dialect = iota + 1
	SQLite
)

// SQL applies files not yet applied on db, each in its own transaction,
// and reports how many it applied. On PostgreSQL it holds the same
// advisory lock as Pgx, on one connection of db.
func SQL(ctx context.Context, db *sql.DB, d Dialect, files []File) (applied int, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	table, count, insert := pgTable, `SELECT count(*) FROM outbox_schema_migrations WHERE version = $1`,
		`INSERT INTO outbox_schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`
	switch d {
	case Postgres:
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
			return 0, fmt.Errorf("migrate: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)
	case SQLite:
		// SQLite takes one writer at a time: each file's transaction is
		// the lock.
		table = `CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`
		count = `SELECT count(*) FROM outbox_schema_migrations WHERE version = ?`
		insert = `INSERT INTO outbox_schema_migrations (version, name, applied_at) VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING`
	default:
		return 0, errors.New("migrate: unknown SQL dialect")
	}
	if _, err := conn.ExecContext(ctx, table); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	for _, f := range files {
		err := func() (err error) {
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() {
				if err != nil {
					_ = tx.Rollback()
				}
			}()
			var n int
			if err := tx.QueryRowContext(ctx, count, f.Version).Scan(&n); err != nil || n > 0 {
				if err == nil {
					err = tx.Commit()
				}
				return err
			}
			if _, err := tx.ExecContext(ctx, f.Body); err != nil {
				return err
			}
			args := []any{f.Version, f.Name}
			if d == SQLite {
				args = append(args, time.Now().UnixMicro())
			}
			if _, err := tx.ExecContext(ctx, insert, args...); err != nil {
				return err
			}
			if err := tx.Commit(); err != nil {
				return err
			}
			applied++
			return nil
		}()
		if err != nil {
			return applied, fmt.Errorf("migrate: migration %s: %w", f.Name, err)
		}
	}
	return applied, nil
}
