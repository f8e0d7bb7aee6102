package sqloutbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/internal/writertest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/sqloutbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/sqlite"
	"github.com/outbox-dev/outbox/store/storetest"
)

type appendFunc func(context.Context, *sql.Tx, ...outbox.Message) error

// inOwnTx writes a row of the caller's table and msgs in one transaction
// of the caller's *sql.DB (not the store's), with the placeholder style
// of its driver.
func inOwnTx(db *sql.DB, insertUser string, appendMsgs appendFunc) func(context.Context, []outbox.Message, bool) error {
	return func(ctx context.Context, msgs []outbox.Message, fail bool) (err error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				tx.Rollback()
			}
		}()
		if _, err := tx.ExecContext(ctx, insertUser, msgs[0].ID.String()); err != nil {
			return err
		}
		if err := appendMsgs(ctx, tx, msgs...); err != nil {
			return err
		}
		if fail {
			return errors.New("rolled back on purpose")
		}
		return tx.Commit()
	}
}

const usersTable = `CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL)`

func sqliteDB(t *testing.T) (*sqlite.Store, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.MigrateOutboxOnly(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The application's own handle on the file, as a service has.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(t.Context(), usersTable); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func postgresDB(t *testing.T) (*postgres.Store, *sql.DB) {
	t.Helper()
	dsn := testenv.PostgresDatabase(t)
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.MigrateOutboxOnly(t.Context()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(t.Context(), usersTable); err != nil {
		t.Fatal(err)
	}
	return s, db
}

// The store conformance suite, every event written by the database/sql
// writers in the caller's transaction. PostgreSQL is read by CDC: the
// polling source reads the same rows with the same statement (the
// store's own suite), and its horizon is the whole server's oldest
// transaction, which a shared test server holds back at random;
// TestAPostgresAggregatesEventsComeInCommitOrder polls.
func TestConformanceThroughSqloutbox(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
			s, db := sqliteDB(t)
			src, err := poll.NewSource(s, poll.Config{Interval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return storetest.Harness{Store: s, Source: src,
				Append: inOwnTx(db, `INSERT INTO users (id, email) VALUES (?, 'x@example.com')`, sqloutbox.AppendSQLite)}
		})
	})
	t.Run("postgres-cdc", func(t *testing.T) {
		storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
			s, db := postgresDB(t)
			src, err := s.CDC(postgres.CDCConfig{Slot: fmt.Sprintf("slot_sqlwriter_%d", time.Now().UnixNano()), StatusInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := src.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			return storetest.Harness{Store: s, Source: src,
				Append: inOwnTx(db, `INSERT INTO users (id, email) VALUES ($1, 'x@example.com')`, sqloutbox.AppendPostgres)}
		})
	})
}

// TestAPostgresAggregatesEventsComeInCommitOrder: T1 (database/sql) takes
// its transaction id first, T2 appends A#1 and commits, T1 appends A#2
// and commits; polling must return A#1 then A#2 (migration 0005's rule
// holds through database/sql too).
func TestAPostgresAggregatesEventsComeInCommitOrder(t *testing.T) {
	s, db := postgresDB(t)
	ctx := t.Context()
	t1, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback()
	if _, err := t1.ExecContext(ctx, `INSERT INTO users VALUES ('other', 'o@example.com')`); err != nil {
		t.Fatal(err)
	}
	a1, a2 := message(t, 1), message(t, 2)
	if err := inOwnTx(db, `INSERT INTO users (id, email) VALUES ($1, 'x@example.com')`, sqloutbox.AppendPostgres)(ctx, []outbox.Message{a1}, false); err != nil {
		t.Fatal(err)
	}
	if err := sqloutbox.AppendPostgres(ctx, t1, a2); err != nil {
		t.Fatal(err)
	}
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	var got []int64
	testenv.Eventually(t, 10*time.Second, "both events fetched", func() bool {
		recs, err := s.Fetch(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, r := range recs {
			got = append(got, r.Message.Sequence)
		}
		return len(got) == 2
	})
	if got[0] != 1 || got[1] != 2 {
		t.Fatalf("polling returned sequences %v, want [1 2] (commit order)", got)
	}
}

func TestTraceContextOfTheCallerIsStored(t *testing.T) {
	for name, open := range map[string]func(*testing.T) (outbox.Message, error){
		"sqlite": func(t *testing.T) (outbox.Message, error) {
			s, db := sqliteDB(t)
			return writeTraced(t, s, db, sqloutbox.AppendSQLite)
		},
		"postgres": func(t *testing.T) (outbox.Message, error) {
			s, db := postgresDB(t)
			return writeTraced(t, s, db, sqloutbox.AppendPostgres)
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := open(t)
			if err != nil {
				t.Fatal(err)
			}
			writertest.CheckTraceHeaders(t, got)
		})
	}
}

func writeTraced(t *testing.T, f interface {
	Fetch(context.Context, outbox.Position, int) ([]outbox.Record, error)
}, db *sql.DB, appendMsgs appendFunc) (outbox.Message, error) {
	ctx := writertest.TraceContext(t, t.Context())
	m := message(t, 1)
	m.Headers = map[string]string{"own": "kept"}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return m, err
	}
	if err := appendMsgs(ctx, tx, m); err != nil {
		tx.Rollback()
		return m, err
	}
	if err := tx.Commit(); err != nil {
		return m, err
	}
	var got outbox.Message
	testenv.Eventually(t, 10*time.Second, "the event is fetched", func() bool {
		recs, err := f.Fetch(ctx, "", 10)
		if err != nil || len(recs) != 1 {
			return false
		}
		got = recs[0].Message
		return true
	})
	return got, nil
}

func message(t *testing.T, seq int64) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage("user", "u-1", "UserChanged", seq, map[string]int64{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
