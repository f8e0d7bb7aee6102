package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/store/postgres"
)

// These tests point `outbox relay` at a table of the user's, created by
// plain SQL in Debezium's outbox layout with other column names than
// outbox's, through each way of configuring it: flags, OUTBOX_MAPPING and
// the config file.

// signupKeys maps the signup_events tables below, as Debezium keys.
func signupKeys(table string) map[string]string {
	return map[string]string{
		"table.name":                        table,
		"table.field.event.id":              "event_id",
		"table.field.event.key":             "agg_id",
		"table.field.event.type":            "event_type",
		"table.field.event.payload":         "body",
		"route.by.field":                    "agg_type",
		"route.topic.replacement":           "signups.${routedByValue}",
		"table.fields.additional.placement": "tenant:header,event_type:header:eventType",
	}
}

// mappingArgs renders keys as repeated --mapping flags.
func mappingArgs(keys map[string]string) []string {
	var args []string
	for k, v := range keys {
		args = append(args, "--mapping", k+"="+v)
	}
	return args
}

// mappingEnv renders keys as OUTBOX_MAPPING's one comma-separated value.
func mappingEnv(keys map[string]string) string {
	var parts []string
	for k, v := range keys {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

const sqliteSignupTable = `CREATE TABLE signup_events (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id   TEXT NOT NULL UNIQUE,
	agg_type   TEXT NOT NULL,
	agg_id     TEXT NOT NULL,
	event_type TEXT NOT NULL,
	body       TEXT,
	tenant     TEXT
)`

const pgSignupTable = `CREATE SCHEMA app; CREATE TABLE app.signup_events (
	event_id   uuid PRIMARY KEY,
	agg_type   text NOT NULL,
	agg_id     text NOT NULL,
	event_type text NOT NULL,
	body       jsonb,
	tenant     text
)`

// signup is one row the application writes.
type signup struct{ id, user, body string }

func someSignups(n int) []signup {
	var out []signup
	for i := range n {
		out = append(out, signup{uuid.NewString(), fmt.Sprintf("u%d", i%3), fmt.Sprintf(`{"n": %d}`, i)})
	}
	return out
}

const insertSignup = `INSERT INTO %s (event_id, agg_type, agg_id, event_type, body, tenant) VALUES ($1, 'user', $2, 'UserSignedUp', $3, 'acme')`

// checkSignups waits for rows on topic PREFIX.user (signups.user unless
// the test routes elsewhere), as the mapping says: keyed by agg_id, the
// body as the value, tenant and the event type as headers beside outbox's
// own.
func checkSignups(t *testing.T, brokers []string, prefix string, rows []signup, logs *lockedBuffer) {
	t.Helper()
	var got []kafkatest.Received
	topic := prefix + ".user"
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d records on %s", len(rows), topic), func() bool {
		var err error
		got, err = kafkatest.ReadAll(t.Context(), brokers, []string{topic})
		return err == nil && len(got) >= len(rows)
	})
	if len(got) != len(rows) {
		t.Fatalf("%d records, want %d\n%s", len(got), len(rows), logs)
	}
	byID := map[string]kafkatest.Received{}
	for _, r := range got {
		byID[r.Headers["id"]] = r
	}
	for _, w := range rows {
		r, ok := byID[w.id]
		if !ok {
			t.Fatalf("event %s not published; got %+v", w.id, got)
		}
		if r.Key != w.user || string(r.Value) != w.body || r.Headers["tenant"] != "acme" || r.Headers["eventType"] != "UserSignedUp" ||
			r.Headers["type"] != "UserSignedUp" || r.Headers["aggregatetype"] != "user" {
			t.Errorf("record %s: key %q value %s headers %v; want key %q value %s", w.id, r.Key, r.Value, r.Headers, w.user, w.body)
		}
	}
}

// waitRelaying waits for the relay's start, so that rows written next are
// after its replication slot.
func waitRelaying(t *testing.T, logs *lockedBuffer, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay's log:\n%s", logs)
		}
	})
	testenv.Eventually(t, 30*time.Second, "the relay starts", func() bool {
		return strings.Contains(logs.String(), "msg=relaying")
	})
	if s := logs.String(); !strings.Contains(s, "topics="+prefix+".{aggregatetype}") {
		t.Fatalf("the relay does not route by the mapping's route.topic.replacement:\n%s", s)
	}
}

func TestRelayReadsAMappedSQLiteTableConfiguredByFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(sqliteSignupTable); err != nil {
		t.Fatal(err)
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	logs, stop := runRelay(t, append([]string{"--store", "sqlite://" + path, "--brokers", broker.Addrs()[0], "--poll-interval", "10ms"},
		mappingArgs(signupKeys("signup_events"))...)...)
	waitRelaying(t, logs, "signups")
	rows := someSignups(6)
	for _, r := range rows {
		if _, err := db.Exec(fmt.Sprintf(insertSignup, "signup_events"), r.id, r.user, r.body); err != nil {
			t.Fatal(err)
		}
	}
	checkSignups(t, broker.Addrs(), "signups", rows, logs)
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, logs)
	}
	noErrorLines(t, logs)
	// Only outbox's own tables were added beside the application's.
	var orders int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'orders'`).Scan(&orders); err != nil || orders != 0 {
		t.Fatalf("a relay with a mapping created the orders table (%d, %v)", orders, err)
	}
}

// pgSignups creates the application's table in a fresh database.
func pgSignups(t *testing.T) (dsn string, conn *pgx.Conn) {
	t.Helper()
	dsn = testenv.PostgresDatabase(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), pgSignupTable); err != nil {
		t.Fatal(err)
	}
	return dsn, conn
}

func TestRelayPollsAMappedPostgresTableConfiguredByTheEnvironment(t *testing.T) {
	dsn, conn := pgSignups(t)
	keys := signupKeys("app.signup_events")
	m, err := mapping.Parse(keys)
	if err != nil {
		t.Fatal(err)
	}
	ddl, err := postgres.PollSetupSQL(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), ddl); err != nil {
		t.Fatal(err)
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	t.Setenv("OUTBOX_MAPPING", mappingEnv(keys))
	logs, stop := runRelay(t, "--store", dsn, "--source", "poll", "--brokers", broker.Addrs()[0], "--poll-interval", "10ms")
	waitRelaying(t, logs, "signups")
	rows := someSignups(6)
	for _, r := range rows {
		if _, err := conn.Exec(t.Context(), fmt.Sprintf(insertSignup, "app.signup_events"), r.id, r.user, r.body); err != nil {
			t.Fatal(err)
		}
	}
	checkSignups(t, broker.Addrs(), "signups", rows, logs)
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, logs)
	}
	noErrorLines(t, logs)
}

// On Apache Kafka when OUTBOX_TEST_KAFKA_BROKERS is set (the embedded
// broker otherwise), on a topic of its own.
func TestRelayStreamsAMappedPostgresTableConfiguredByTheConfigFile(t *testing.T) {
	dsn, conn := pgSignups(t)
	brokers := testBrokers(t)
	prefix := uniqueName("signups")
	keys := signupKeys("app.signup_events")
	keys["route.topic.replacement"] = prefix + ".${routedByValue}"
	file := filepath.Join(t.TempDir(), "relay.json")
	b, _ := json.Marshal(map[string]any{"store": dsn, "source": "cdc", "slot": fmt.Sprintf("signup_%d", time.Now().UnixNano()),
		"brokers": strings.Join(brokers, ","), "mapping": keys})
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logs, stop := runRelay(t, "--config", file)
	waitRelaying(t, logs, prefix)
	rows := someSignups(6)
	for _, r := range rows {
		if _, err := conn.Exec(t.Context(), fmt.Sprintf(insertSignup, "app.signup_events"), r.id, r.user, r.body); err != nil {
			t.Fatal(err)
		}
	}
	checkSignups(t, brokers, prefix, rows, logs)
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d\n%s", code, logs)
	}
	noErrorLines(t, logs)
	var orders bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass('orders') IS NOT NULL`).Scan(&orders); err != nil || orders {
		t.Fatalf("a relay with a mapping created the orders table (%v, %v)", orders, err)
	}
}

// TestABadMappingStopsTheRelayAtStartNamingTheColumn: a missing column
// and a column of the wrong type make `outbox relay` exit 2 before it
// publishes anything, saying which column, on SQLite, PostgreSQL polling
// and PostgreSQL CDC.
func TestABadMappingStopsTheRelayAtStartNamingTheColumn(t *testing.T) {
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	bad := []struct {
		name, key, value string
		want             []string
	}{
		{"missing column", "table.field.event.key", "user_id", []string{`"user_id"`, "table.field.event.key"}},
		{"wrong type", "table.field.event.sequence", "tenant", []string{`"tenant"`, "table.field.event.sequence"}},
	}
	type target struct {
		name  string
		store func(t *testing.T) (store, table string)
		args  []string
	}
	targets := []target{
		{"sqlite", func(t *testing.T) (string, string) {
			path := filepath.Join(t.TempDir(), "app.db")
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(sqliteSignupTable); err != nil {
				t.Fatal(err)
			}
			return "sqlite://" + path, "signup_events"
		}, nil},
	}
	if os.Getenv("OUTBOX_TEST_PG_DSN") != "" || os.Getenv("OUTBOX_REQUIRE_SERVICES") != "" {
		pg := func(t *testing.T) (string, string) { dsn, _ := pgSignups(t); return dsn, "app.signup_events" }
		targets = append(targets, target{"postgres cdc", pg, []string{"--source", "cdc", "--slot", fmt.Sprintf("bad_%d", time.Now().UnixNano())}},
			target{"postgres poll", pg, []string{"--source", "poll"}})
	}
	for _, tg := range targets {
		for _, b := range bad {
			t.Run(tg.name+"/"+b.name, func(t *testing.T) {
				store, table := tg.store(t)
				keys := signupKeys(table)
				keys[b.key] = b.value
				var out lockedBuffer
				args := append([]string{"relay", "--store", store, "--brokers", broker.Addrs()[0]}, tg.args...)
				// Bounded: a relay that starts instead of refusing would run on.
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				code := run(ctx, append(args, mappingArgs(keys)...), &out, &out)
				if code != 2 {
					t.Fatalf("relay exited %d, want 2\n%s", code, out.String())
				}
				for _, w := range b.want {
					if !strings.Contains(out.String(), w) {
						t.Errorf("the error does not say %s:\n%s", w, out.String())
					}
				}
			})
		}
	}
}

func TestMigrateOutboxOnly(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "app.db")
		var out lockedBuffer
		if code := run(t.Context(), []string{"migrate", "--outbox-only", "--store", "sqlite://" + path}, &out, &out); code != 0 {
			t.Fatalf("migrate exited %d\n%s", code, out.String())
		}
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		if !slices.Contains(names, "outbox") || slices.Contains(names, "orders") {
			t.Fatalf("tables %v: want outbox's, without orders", names)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := testenv.PostgresDatabase(t)
		var out lockedBuffer
		if code := run(t.Context(), []string{"migrate", "--outbox-only", "--store", dsn, "--source", "poll"}, &out, &out); code != 0 {
			t.Fatalf("migrate exited %d\n%s", code, out.String())
		}
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var outboxT, orders bool
		if err := conn.QueryRow(t.Context(), `SELECT to_regclass('outbox') IS NOT NULL, to_regclass('orders') IS NOT NULL`).Scan(&outboxT, &orders); err != nil {
			t.Fatal(err)
		}
		if !outboxT || orders {
			t.Fatalf("outbox table %v, orders table %v: want only outbox's", outboxT, orders)
		}
	})
}

// TestMigrateSetsUpPollingOfAMappedPostgresTable: a user who cannot call
// postgres.PollSetupSQL from Go gets its statements from outbox migrate:
// applied (idempotently) by migrate --mapping ... --source poll, or
// printed by --print-sql without connecting. Either way outbox relay
// then polls the table.
func TestMigrateSetsUpPollingOfAMappedPostgresTable(t *testing.T) {
	keys := signupKeys("app.signup_events")
	relayDelivers := func(t *testing.T, dsn string, conn *pgx.Conn) {
		broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer broker.Close()
		logs, stop := runRelay(t, append([]string{"--store", dsn, "--source", "poll", "--brokers", broker.Addrs()[0], "--poll-interval", "10ms"},
			mappingArgs(keys)...)...)
		waitRelaying(t, logs, "signups")
		rows := someSignups(4)
		for _, r := range rows {
			if _, err := conn.Exec(t.Context(), fmt.Sprintf(insertSignup, "app.signup_events"), r.id, r.user, r.body); err != nil {
				t.Fatal(err)
			}
		}
		checkSignups(t, broker.Addrs(), "signups", rows, logs)
		if code := stop(); code != 0 {
			t.Fatalf("relay exited %d\n%s", code, logs)
		}
		noErrorLines(t, logs)
	}
	t.Run("applied", func(t *testing.T) {
		dsn, conn := pgSignups(t)
		// Before: the relay refuses the table and says how to set it up.
		var refused lockedBuffer
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if code := run(ctx, append([]string{"relay", "--store", dsn, "--source", "poll", "--brokers", "127.0.0.1:1"}, mappingArgs(keys)...), &refused, &refused); code != 2 ||
			!strings.Contains(refused.String(), "outbox migrate --mapping ... --source poll") {
			t.Fatalf("relay on a table not set up for polling: exit %d, want 2 and how outbox migrate sets it up\n%s", code, refused.String())
		}
		for range 2 { // twice: the setup is idempotent
			var out lockedBuffer
			if code := run(t.Context(), append([]string{"migrate", "--store", dsn, "--source", "poll"}, mappingArgs(keys)...), &out, &out); code != 0 {
				t.Fatalf("migrate exited %d\n%s", code, out.String())
			}
		}
		var cols int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.columns
			WHERE table_schema = 'app' AND table_name = 'signup_events' AND column_name IN ('position', 'txid')`).Scan(&cols); err != nil || cols != 2 {
			t.Fatalf("migrate added %d of the columns position and txid (%v)", cols, err)
		}
		relayDelivers(t, dsn, conn)
	})
	t.Run("printed", func(t *testing.T) {
		var out, errOut lockedBuffer
		// An address nothing listens on: printing connects to nothing.
		args := append([]string{"migrate", "--print-sql", "--store", "postgres://app@127.0.0.1:1/app", "--source", "poll"}, mappingArgs(keys)...)
		if code := run(t.Context(), args, &out, &errOut); code != 0 {
			t.Fatalf("migrate --print-sql exited %d\n%s%s", code, out.String(), errOut.String())
		}
		ddl := out.String()
		for _, want := range []string{`ALTER TABLE "app"."signup_events" ADD COLUMN IF NOT EXISTS "position"`, "CREATE OR REPLACE TRIGGER"} {
			if !strings.Contains(ddl, want) {
				t.Fatalf("--print-sql lacks %q:\n%s", want, ddl)
			}
		}
		dsn, conn := pgSignups(t)
		if _, err := conn.Exec(t.Context(), ddl); err != nil {
			t.Fatalf("the printed SQL does not run: %v\n%s", err, ddl)
		}
		relayDelivers(t, dsn, conn)
	})
	t.Run("refused where it does not apply", func(t *testing.T) {
		for _, args := range [][]string{
			{"--store", "postgres://app@127.0.0.1:1/app", "--source", "poll"},                      // no mapping
			append([]string{"--store", "postgres://app@127.0.0.1:1/app"}, mappingArgs(keys)...),    // cdc needs no setup
			append([]string{"--store", "sqlite://" + t.TempDir() + "/x.db"}, mappingArgs(keys)...), // SQLite needs no setup
		} {
			var out lockedBuffer
			if code := run(t.Context(), append([]string{"migrate", "--print-sql"}, args...), &out, &out); code != 2 || !strings.Contains(out.String(), "--print-sql") {
				t.Errorf("migrate --print-sql %v: exit %d, want 2 and a message naming --print-sql\n%s", args, code, out.String())
			}
		}
	})
}

// A bad --mapping says so once, and points to the relay's own help.
func TestABadMappingFlagSaysSoOnceAndPointsToTheRelaysHelp(t *testing.T) {
	var out lockedBuffer
	code := run(t.Context(), []string{"relay", "--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db"), "--brokers", "127.0.0.1:1",
		"--mapping", "table.name=e,table.field.event.kee=x"}, &out, &out)
	want := "outbox: --mapping: invalid outbox table mapping: unknown key \"table.field.event.kee\""
	if code != 2 || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "Run 'outbox relay --help' for usage.") {
		t.Fatalf("exit %d:\n%s\nwant 2, %q and a pointer to outbox relay --help", code, out.String(), want)
	}
}

// What a first start on a table that already has rows sends: polling sends
// the rows already there, then what follows; CDC sends what commits after
// its slot exists (outbox migrate creates it), not the rows before. So a
// move from Debezium runs outbox migrate before Debezium stops.
func TestWhatAFirstStartOnATableWithRowsSends(t *testing.T) {
	keys := signupKeys("app.signup_events")
	insert := func(t *testing.T, conn *pgx.Conn, rows []signup) {
		t.Helper()
		for _, r := range rows {
			if _, err := conn.Exec(t.Context(), fmt.Sprintf(insertSignup, "app.signup_events"), r.id, r.user, r.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	migrate := func(t *testing.T, args ...string) {
		t.Helper()
		var out lockedBuffer
		if code := run(t.Context(), append(append([]string{"migrate"}, args...), mappingArgs(keys)...), &out, &out); code != 0 {
			t.Fatalf("migrate exited %d\n%s", code, out.String())
		}
	}
	for _, source := range []string{"poll", "cdc"} {
		t.Run(source, func(t *testing.T) {
			dsn, conn := pgSignups(t)
			args := []string{"--store", dsn, "--source", source, "--slot", uniqueName("first")}
			before := someSignups(3) // committed before outbox migrate
			insert(t, conn, before)
			migrate(t, args...)
			between := someSignups(2) // after migrate, before the relay's first start
			insert(t, conn, between)
			broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer broker.Close()
			logs, stop := runRelay(t, append(append(args, "--brokers", broker.Addrs()[0], "--poll-interval", "10ms"), mappingArgs(keys)...)...)
			waitRelaying(t, logs, "signups")
			if !strings.Contains(logs.String(), "table=app.signup_events") {
				t.Errorf("the relay's start line does not name the table it reads:\n%s", logs)
			}
			after := someSignups(2)
			insert(t, conn, after)
			want := append(between, after...)
			if source == "poll" {
				want = append(before, want...)
			}
			checkSignups(t, broker.Addrs(), "signups", want, logs)
			if code := stop(); code != 0 {
				t.Fatalf("relay exited %d\n%s", code, logs)
			}
		})
	}
}
