package main

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/migrations"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/pgxoutbox"
	"github.com/outbox-dev/outbox/sqloutbox"
)

// These tests follow README's "Use outbox from your own service" as a
// library user would: outbox migrate --outbox-only on the service's own
// database, the writer library in the service's transaction, and the
// standalone outbox relay, which must leave the order service's tables
// out of it and log no error.

// testBrokers is Apache Kafka when OUTBOX_TEST_KAFKA_BROKERS is set, the
// embedded broker otherwise; tests keep their topics unique.
func testBrokers(t *testing.T) []string {
	t.Helper()
	if os.Getenv("OUTBOX_TEST_KAFKA_BROKERS") != "" {
		brokers := testenv.KafkaBrokers(t)
		t.Logf("on Apache Kafka at %s", strings.Join(brokers, ","))
		return brokers
	}
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addrs()
}

// uniqueName is a topic or aggregate type no other test (or run against
// the same Apache Kafka) uses.
func uniqueName(prefix string) string {
	return prefix + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
}

// noErrorLines fails t for any level=ERROR line the command logged.
func noErrorLines(t *testing.T, logs *lockedBuffer) {
	t.Helper()
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("the relay logged an error: %s", line)
		}
	}
}

// orderTables lists which of the order service's tables exist.
type tableCheck func(name string) bool

func checkNoOrderTables(t *testing.T, exists tableCheck) {
	t.Helper()
	for _, name := range []string{"orders", "order_idempotency_keys"} {
		if exists(name) {
			t.Errorf("the relay created the order service's table %s in the user's database", name)
		}
	}
}

func TestTheRelayOnAnOutboxOnlyStoreCreatesNoOrderTablesAndLogsNoError(t *testing.T) {
	type target struct {
		name   string
		store  func(t *testing.T) string
		args   []string
		append func(t *testing.T, store string, m outbox.Message)
		exists func(t *testing.T, store string) tableCheck
	}
	targets := []target{{
		name:  "sqlite",
		store: func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "app.db") },
		append: func(t *testing.T, store string, m outbox.Message) {
			db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(store, "sqlite://")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			tx, err := db.BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if err := sqloutbox.AppendSQLite(t.Context(), tx, m); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		},
		exists: func(t *testing.T, store string) tableCheck {
			return func(name string) bool {
				db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(store, "sqlite://"))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				var n int
				if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = ?`, name).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n > 0
			}
		},
	}}
	if os.Getenv("OUTBOX_TEST_PG_DSN") != "" || os.Getenv("OUTBOX_REQUIRE_SERVICES") != "" {
		pgAppend := func(t *testing.T, store string, m outbox.Message) {
			conn, err := pgx.Connect(t.Context(), store)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if err := pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error { return pgxoutbox.Append(t.Context(), tx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		pgExists := func(t *testing.T, store string) tableCheck {
			return func(name string) bool {
				conn, err := pgx.Connect(t.Context(), store)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(context.Background())
				var ok bool
				if err := conn.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
					t.Fatal(err)
				}
				return ok
			}
		}
		pgStore := func(t *testing.T) string { return testenv.PostgresDatabase(t) }
		targets = append(targets,
			target{"postgres poll", pgStore, []string{"--source", "poll"}, pgAppend, pgExists},
			target{"postgres cdc", pgStore, []string{"--source", "cdc", "--slot", fmt.Sprintf("lib_%d", time.Now().UnixNano())}, pgAppend, pgExists})
	}
	for _, tg := range targets {
		for _, how := range []string{"outbox migrate --outbox-only", "the SQL files by your own tool"} {
			t.Run(tg.name+"/"+how, func(t *testing.T) { relayOnOutboxOnlyStore(t, tg.store(t), tg.args, how, tg.append, tg.exists) })
		}
	}
}

// relayOnOutboxOnlyStore migrates store as how says, runs the relay on it
// and checks one event arrives, with no order table made and no error
// logged.
func relayOnOutboxOnlyStore(t *testing.T, store string, args []string, how string,
	appendEvent func(t *testing.T, store string, m outbox.Message), exists func(t *testing.T, store string) tableCheck) {
	if how == "outbox migrate --outbox-only" {
		var out lockedBuffer
		if code := run(t.Context(), append([]string{"migrate", "--outbox-only", "--store", store}, args...), &out, &out); code != 0 {
			t.Fatalf("migrate exited %d\n%s", code, out.String())
		}
	} else {
		applyMigrationFiles(t, store)
	}
	brokers := testBrokers(t)
	aggType := uniqueName("lib")
	// The cleanup intervals are long: a worker failing on a table
	// that is not there says so at its start.
	logs, stop := runRelay(t, append([]string{"--store", store, "--brokers", strings.Join(brokers, ","), "--poll-interval", "10ms"}, args...)...)
	testenv.Eventually(t, 30*time.Second, "the relay starts", func() bool { return strings.Contains(logs.String(), "msg=relaying") })

	m, err := outbox.NewMessage(aggType, "u1", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	appendEvent(t, store, m)
	topic := "outbox.event." + aggType
	var got []kafkatest.Received
	testenv.Eventually(t, 30*time.Second, "the event on "+topic, func() bool {
		got, err = kafkatest.ReadAll(t.Context(), brokers, []string{topic})
		return err == nil && len(got) > 0
	})
	if len(got) != 1 || got[0].Headers["id"] != m.ID.String() || got[0].Key != "u1" {
		t.Fatalf("records on %s: %+v; want the one event %s keyed u1", topic, got, m.ID)
	}
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, logs)
	}
	checkNoOrderTables(t, exists(t, store))
	noErrorLines(t, logs)
	if t.Failed() {
		t.Logf("relay's log:\n%s", logs)
	}
}

// applyMigrationFiles runs package migrations' outbox files on store, each
// as one script in name order, as a migration tool would, recording
// nothing of its own.
func applyMigrationFiles(t *testing.T, store string) {
	t.Helper()
	files, exec := migrations.PostgresOutbox, func(string) error { return nil }
	if path, ok := strings.CutPrefix(store, "sqlite://"); ok {
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		files, exec = migrations.SQLiteOutbox, func(body string) error { _, err := db.ExecContext(t.Context(), body); return err }
	} else {
		conn, err := pgx.Connect(t.Context(), store)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		exec = func(body string) error { _, err := conn.Exec(t.Context(), body); return err }
	}
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		body, err := fs.ReadFile(files, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(string(body)); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
	}
}
