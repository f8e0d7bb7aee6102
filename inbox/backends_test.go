package inbox_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"

	"github.com/outbox-dev/outbox/inbox"
	"github.com/outbox-dev/outbox/internal/testenv"
)

// backend is a consumer's database as the tests drive it, whichever the
// driver.
type backend struct {
	name string
	// inbox builds an inbox for this database.
	inbox func(t *testing.T, cfg inbox.Config) *inbox.Inbox
	// record runs one transaction that records ev and commits, or rolls
	// back when commit is false.
	record func(ctx context.Context, in *inbox.Inbox, ev inbox.Event, commit bool) (inbox.Result, error)
	// processor processes each new event by inserting a row (event_id,
	// sequence) into processed, through h first (which may fail).
	processor func(in *inbox.Inbox, h func(inbox.Event) error) inbox.Processor
	// processed lists processed's event ids, in insertion order.
	processed func(t *testing.T) []string
	cleanup   func(ctx context.Context, in *inbox.Inbox, retention time.Duration) (int64, error)
	// db is the database/sql handle, when the backend has one.
	db *sql.DB
}

const processedTable = `CREATE TABLE processed (n INTEGER PRIMARY KEY %s, event_id TEXT NOT NULL, sequence BIGINT NOT NULL)`

func withDialect(d inbox.Dialect) func(t *testing.T, cfg inbox.Config) *inbox.Inbox {
	return func(t *testing.T, cfg inbox.Config) *inbox.Inbox {
		cfg.Dialect = d
		in, err := inbox.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
}

func sqlBackend(t *testing.T, name string, db *sql.DB, d inbox.Dialect, insert string) backend {
	return backend{
		name:  name,
		db:    db,
		inbox: withDialect(d),
		record: func(ctx context.Context, in *inbox.Inbox, ev inbox.Event, commit bool) (inbox.Result, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return inbox.Result{}, err
			}
			defer tx.Rollback()
			res, err := in.Record(ctx, tx, ev)
			if err != nil || !commit {
				return res, err
			}
			return res, tx.Commit()
		},
		processor: func(in *inbox.Inbox, h func(inbox.Event) error) inbox.Processor {
			return in.SQLProcessor(db, func(ctx context.Context, tx *sql.Tx, _ *kgo.Record, ev inbox.Event, _ inbox.Result) error {
				if err := h(ev); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, insert, ev.ID, ev.Sequence)
				return err
			})
		},
		processed: func(t *testing.T) []string {
			rows, err := db.QueryContext(t.Context(), `SELECT event_id FROM processed ORDER BY n`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var ids []string
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			return ids
		},
		cleanup: func(ctx context.Context, in *inbox.Inbox, retention time.Duration) (int64, error) {
			return in.Cleanup(ctx, db, retention)
		},
	}
}

func sqliteBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "consumer.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if n, err := inbox.Migrate(t.Context(), db, inbox.SQLite); err != nil || n != 1 {
		t.Fatalf("Migrate = %d, %v", n, err)
	}
	if _, err := db.ExecContext(t.Context(), sprintf(processedTable, "AUTOINCREMENT")); err != nil {
		t.Fatal(err)
	}
	return sqlBackend(t, "sqlite", db, inbox.SQLite, `INSERT INTO processed (event_id, sequence) VALUES (?, ?)`)
}

func postgresSQLBackend(t *testing.T) backend {
	db, err := sql.Open("pgx", testenv.PostgresDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if n, err := inbox.Migrate(t.Context(), db, inbox.Postgres); err != nil || n != 1 {
		t.Fatalf("Migrate = %d, %v", n, err)
	}
	if _, err := db.ExecContext(t.Context(), sprintf(processedTable, "GENERATED ALWAYS AS IDENTITY")); err != nil {
		t.Fatal(err)
	}
	return sqlBackend(t, "postgres-database-sql", db, inbox.Postgres, `INSERT INTO processed (event_id, sequence) VALUES ($1, $2)`)
}

func postgresPgxBackend(t *testing.T) backend {
	pool, err := pgxpool.New(t.Context(), testenv.PostgresDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if n, err := inbox.MigratePgx(t.Context(), pool); err != nil || n != 1 {
		t.Fatalf("MigratePgx = %d, %v", n, err)
	}
	if _, err := pool.Exec(t.Context(), sprintf(processedTable, "GENERATED ALWAYS AS IDENTITY")); err != nil {
		t.Fatal(err)
	}
	return backend{
		name:  "postgres-pgx",
		inbox: withDialect(0), // the pgx methods need none
		record: func(ctx context.Context, in *inbox.Inbox, ev inbox.Event, commit bool) (inbox.Result, error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return inbox.Result{}, err
			}
			defer tx.Rollback(ctx)
			res, err := in.RecordPgx(ctx, tx, ev)
			if err != nil || !commit {
				return res, err
			}
			return res, tx.Commit(ctx)
		},
		processor: func(in *inbox.Inbox, h func(inbox.Event) error) inbox.Processor {
			return in.PgxProcessor(pool, func(ctx context.Context, tx pgx.Tx, _ *kgo.Record, ev inbox.Event, _ inbox.Result) error {
				if err := h(ev); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO processed (event_id, sequence) VALUES ($1, $2)`, ev.ID, ev.Sequence)
				return err
			})
		},
		processed: func(t *testing.T) []string {
			rows, err := pool.Query(t.Context(), `SELECT event_id FROM processed ORDER BY n`)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return ids
		},
		cleanup: func(ctx context.Context, in *inbox.Inbox, retention time.Duration) (int64, error) {
			return in.CleanupPgx(ctx, pool, retention)
		},
	}
}

// eachBackend runs fn on SQLite always and on PostgreSQL, through
// database/sql and pgx, when the environment provides it.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, open := range []struct {
		name string
		fn   func(*testing.T) backend
	}{{"sqlite", sqliteBackend}, {"postgres-database-sql", postgresSQLBackend}, {"postgres-pgx", postgresPgxBackend}} {
		t.Run(open.name, func(t *testing.T) { fn(t, open.fn(t)) })
	}
}
