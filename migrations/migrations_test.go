package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/migrations"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// migrator is what both stores offer.
type migrator interface {
	Migrate(context.Context) (int, error)
	MigrateOutboxOnly(context.Context) (int, error)
}

type target struct {
	store  migrator
	tables func(t *testing.T) []string
	files  fs.FS
	relay  []string // the tables the relay needs
}

func sqliteTarget(t *testing.T) target {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"), sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return target{store: s, files: migrations.SQLiteOutbox,
		relay: []string{"outbox", "outbox_checkpoints", "outbox_dead_letters", "outbox_parked_aggregates"},
		tables: func(t *testing.T) []string {
			return sqlTables(t, s.DB(), `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
		}}
}

func postgresTarget(t *testing.T) target {
	s, err := postgres.Open(t.Context(), testenv.PostgresDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return target{store: s, files: migrations.PostgresOutbox,
		relay: []string{"outbox", "outbox_aggregate_heads", "outbox_checkpoints", "outbox_dead_letters", "outbox_parked_aggregates"},
		tables: func(t *testing.T) []string {
			rows, err := s.Pool().Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`)
			if err != nil {
				t.Fatal(err)
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return names
		}}
}

func sqlTables(t *testing.T, db *sql.DB, q string) []string {
	rows, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

func count(t *testing.T, files fs.FS) int {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestMigrateOutboxOnlyCreatesTheRelaysTablesAndNoOrders: the outbox-only
// migrations create what the relay needs and no orders table; they are
// applied once; a full Migrate afterwards adds only the order service's.
func TestMigrateOutboxOnlyCreatesTheRelaysTablesAndNoOrders(t *testing.T) {
	for name, open := range map[string]func(*testing.T) target{"sqlite": sqliteTarget, "postgres": postgresTarget} {
		t.Run(name, func(t *testing.T) {
			tg := open(t)
			n, err := tg.store.MigrateOutboxOnly(t.Context())
			if err != nil || n != count(t, tg.files) {
				t.Fatalf("MigrateOutboxOnly = %d, %v; want the %d outbox files", n, err, count(t, tg.files))
			}
			tables := tg.tables(t)
			for _, want := range append(tg.relay, "outbox_schema_migrations") {
				if !slices.Contains(tables, want) {
					t.Errorf("table %s missing after MigrateOutboxOnly (have %v)", want, tables)
				}
			}
			if slices.Contains(tables, "orders") || slices.Contains(tables, "order_idempotency_keys") {
				t.Fatalf("MigrateOutboxOnly created the order service's tables: %v", tables)
			}
			if n, err := tg.store.MigrateOutboxOnly(t.Context()); n != 0 || err != nil {
				t.Fatalf("second MigrateOutboxOnly = %d, %v; want 0", n, err)
			}
			if n, err := tg.store.Migrate(t.Context()); n != 2 || err != nil {
				t.Fatalf("Migrate after MigrateOutboxOnly = %d, %v; want the 2 order migrations", n, err)
			}
			if !slices.Contains(tg.tables(t), "orders") {
				t.Fatal("Migrate did not create orders")
			}
		})
	}
}

// TestTheFilesAloneMakeAWorkingOutbox applies the exported files as a
// user's migration tool would (each file executed, in name order), checks
// that outbox's runner then finds them applied, and appends and fetches an
// event through the store.
func TestTheFilesAloneMakeAWorkingOutbox(t *testing.T) {
	ctx := t.Context()
	m, err := outbox.NewMessage("user", "u1", "UserSignedUp", 1, map[string]string{"email": "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("sqlite", func(t *testing.T) {
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "f.db"), sqlite.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		applyFiles(t, migrations.SQLiteOutbox, func(body string) error { _, err := s.DB().ExecContext(ctx, body); return err })
		// Each file recorded itself: outbox's runner finds nothing to do.
		if n, err := s.MigrateOutboxOnly(ctx); err != nil || n != 0 {
			t.Fatalf("MigrateOutboxOnly after the files = %d, %v; want 0 applied", n, err)
		}
		if err := s.Transact(ctx, func(tx *sql.Tx) error { return s.Append(ctx, tx, m) }); err != nil {
			t.Fatal(err)
		}
		recs, err := s.Fetch(ctx, "", 10)
		if err != nil || len(recs) != 1 || recs[0].Message.ID != m.ID {
			t.Fatalf("Fetch = %v, %v", recs, err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		s, err := postgres.Open(ctx, testenv.PostgresDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		applyFiles(t, migrations.PostgresOutbox, func(body string) error { _, err := s.Pool().Exec(ctx, body); return err })
		if n, err := s.MigrateOutboxOnly(ctx); err != nil || n != 0 {
			t.Fatalf("MigrateOutboxOnly after the files = %d, %v; want 0 applied", n, err)
		}
		if err := s.Transact(ctx, func(tx pgx.Tx) error { return s.Append(ctx, tx, m) }); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the event is fetched", func() bool {
			recs, err := s.Fetch(ctx, "", 10)
			return err == nil && len(recs) == 1 && recs[0].Message.ID == m.ID
		})
	})
}

func applyFiles(t *testing.T, files fs.FS, exec func(string) error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries { // ReadDir sorts by name
		body, err := fs.ReadFile(files, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(string(body)); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
	}
}
