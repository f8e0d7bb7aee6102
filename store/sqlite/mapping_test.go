package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
	"github.com/outbox-dev/outbox/store/storetest"
)

// These tests read a table that is not outbox's own: Debezium's outbox
// layout with other column names, created by plain SQL and written by
// plain INSERTs, as another application would.

// layout is one way to declare the table's payload, id and time columns.
type layout struct {
	name                  string
	body, eventID, create string
}

func createTable(t *testing.T, s *sqlite.Store, l layout) {
	t.Helper()
	if _, err := s.DB().ExecContext(t.Context(), `CREATE TABLE events (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		event_id   `+l.eventID+` NOT NULL UNIQUE,
		agg_type   TEXT NOT NULL,
		agg_id     TEXT NOT NULL,
		event_type TEXT NOT NULL,
		body       `+l.body+`,
		created    `+l.create+`,
		tenant     TEXT,
		version    INTEGER NOT NULL
	)`); err != nil {
		t.Fatal(err)
	}
}

func keys(prefix string) map[string]string {
	return map[string]string{
		"table.name":                        "events",
		"table.field.event.id":              "event_id",
		"table.field.event.key":             "agg_id",
		"table.field.event.type":            "event_type",
		"table.field.event.payload":         "body",
		"table.field.event.timestamp":       "created",
		"table.field.event.sequence":        "version",
		"route.by.field":                    "agg_type",
		"route.topic.replacement":           prefix + ".${routedByValue}",
		"table.fields.additional.placement": "tenant:header,event_type:header:eventType",
	}
}

type row struct {
	id              uuid.UUID
	aggType, aggID  string
	version         int64
	body            any // what is inserted
	created         any
	tenant          any
	wantValue       []byte
	wantTime        time.Time
	wantTenantValue string
}

func TestAMappedSQLiteTableReachesKafka(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, l := range []struct {
		layout
		body    func(n int) (any, []byte)
		created any
		id      func(uuid.UUID) any
	}{
		{layout: layout{"JSON in TEXT, time in ms", "TEXT", "TEXT", "INTEGER"},
			body:    func(n int) (any, []byte) { s := fmt.Sprintf(`{ "n":%d }`, n); return s, []byte(s) },
			created: at.UnixMilli(), id: func(u uuid.UUID) any { return u.String() }},
		{layout: layout{"JSON declared, time as SQLite's CURRENT_TIMESTAMP text", "JSON", "TEXT", "TEXT"},
			body:    func(n int) (any, []byte) { s := fmt.Sprintf(`{"n":%d,"list":[1,2]}`, n); return s, []byte(s) },
			created: at.Format("2006-01-02 15:04:05"), id: func(u uuid.UUID) any { return u.String() }},
		{layout: layout{"plain text, DATETIME", "TEXT", "TEXT", "DATETIME"},
			body: func(n int) (any, []byte) {
				s := fmt.Sprintf("plain text, not JSON: ünïcödé №%d", n)
				return s, []byte(s)
			},
			created: at.Format(time.RFC3339), id: func(u uuid.UUID) any { return u.String() }},
		{layout: layout{"bytes in a BLOB, id as 16 bytes, time in µs", "BLOB", "BLOB", "INTEGER"},
			body:    func(n int) (any, []byte) { b := []byte{0, 0xff, 0xfe, byte(n), '\\', 0x80}; return b, b },
			created: at.UnixMicro(), id: func(u uuid.UUID) any { return u[:] }},
	} {
		t.Run(l.name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			createTable(t, s, l.layout)
			b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			m, err := mapping.Parse(keys("lite"))
			if err != nil {
				t.Fatal(err)
			}
			tbl, err := s.Table(ctx, sqlite.TableConfig{Mapping: &m})
			if err != nil {
				t.Fatal(err)
			}
			src, err := poll.NewSource(tbl, poll.Config{Interval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: b.Addrs(), TopicTemplate: m.TopicTemplate()})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			r, err := relay.New(src, pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Serve(t, r)
			acme := "acme"
			var rows []row
			for i, a := range []struct {
				typ, id string
				tenant  any
			}{{"payment", "p-1", acme}, {"payment", "p-1", acme}, {"refund", "r-9", nil}, {"payment", "p-2", acme}, {"payment", "p-1", acme}} {
				body, want := l.body(i)
				r := row{id: uuid.Must(uuid.NewV7()), aggType: a.typ, aggID: a.id, body: body, created: l.created, tenant: a.tenant,
					wantValue: want, wantTime: at}
				for _, prev := range rows {
					if prev.aggType == r.aggType && prev.aggID == r.aggID {
						r.version = prev.version
					}
				}
				r.version++
				if a.tenant != nil {
					r.wantTenantValue = acme
				}
				rows = append(rows, r)
			}
			// Two in one transaction, the rest alone.
			for _, group := range [][]row{rows[:2], rows[2:3], rows[3:4], rows[4:]} {
				tx, err := s.DB().BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range group {
					if _, err := tx.ExecContext(ctx, `INSERT INTO events (event_id, agg_type, agg_id, event_type, body, created, tenant, version)
						VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, l.id(r.id), r.aggType, r.aggID, fmt.Sprint("Step", r.version), r.body, r.created, r.tenant, r.version); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			recs := consume(t, b.Addrs(), []string{"lite.payment", "lite.refund"}, len(rows))
			check(t, rows, recs)
		})
	}
}

func consume(t *testing.T, brokers, topics []string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	if len(out) != want {
		t.Fatalf("read %d records, want %d", len(out), want)
	}
	return out
}

// check holds every record to its row: topic, key, value, timestamp,
// headers, and each aggregate's order.
func check(t *testing.T, rows []row, recs []*kgo.Record) {
	t.Helper()
	byID := map[string]row{}
	for _, r := range rows {
		byID[r.id.String()] = r
	}
	last := map[string]int64{}
	for _, rec := range recs {
		h := map[string]string{}
		for _, kv := range rec.Headers {
			h[kv.Key] = string(kv.Value)
		}
		r, ok := byID[h["id"]]
		if !ok {
			t.Fatalf("record with id header %q, which no row has", h["id"])
		}
		delete(byID, h["id"])
		want := map[string]string{"id": r.id.String(), "type": fmt.Sprint("Step", r.version), "aggregatetype": r.aggType,
			"aggregateid": r.aggID, "sequence": strconv.FormatInt(r.version, 10), "eventType": fmt.Sprint("Step", r.version)}
		if r.wantTenantValue != "" {
			want["tenant"] = r.wantTenantValue
		}
		if fmt.Sprint(h) != fmt.Sprint(want) {
			t.Errorf("event %s: headers %v, want %v", r.id, h, want)
		}
		if rec.Topic != "lite."+r.aggType || string(rec.Key) != r.aggID {
			t.Errorf("event %s: topic %q key %q", r.id, rec.Topic, rec.Key)
		}
		if !bytes.Equal(rec.Value, r.wantValue) {
			t.Errorf("event %s: value %q, want %q", r.id, rec.Value, r.wantValue)
		}
		if !rec.Timestamp.Equal(r.wantTime) {
			t.Errorf("event %s: timestamp %v, want %v", r.id, rec.Timestamp, r.wantTime)
		}
		key := r.aggType + "/" + r.aggID
		if r.version <= last[key] {
			t.Errorf("aggregate %s: version %d after %d", key, r.version, last[key])
		}
		last[key] = r.version
	}
	for id := range byID {
		t.Errorf("event %s never reached Kafka", id)
	}
}

func TestABadSQLiteMappingFailsAtStartNamingTheColumn(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	createTable(t, s, layout{body: "TEXT", eventID: "TEXT", create: "INTEGER"})
	if _, err := s.DB().ExecContext(ctx, `
		CREATE TABLE plain_rowid (seq INTEGER PRIMARY KEY, event_id TEXT, agg_type TEXT, agg_id TEXT, event_type TEXT, body TEXT, created INTEGER, tenant TEXT, version INTEGER);
		CREATE TABLE no_key (event_id TEXT, agg_type TEXT, agg_id TEXT, event_type TEXT, body TEXT, created INTEGER, tenant TEXT, version INTEGER);
		CREATE TABLE no_rowid (event_id TEXT PRIMARY KEY, agg_type TEXT, agg_id TEXT, event_type TEXT, body TEXT, created INTEGER, tenant TEXT, version INTEGER) WITHOUT ROWID;
		CREATE VIEW events_view AS SELECT * FROM events`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys map[string]string
		want string
		is   error
	}{
		{"missing column", map[string]string{"table.field.event.key": "aggregate_id"},
			`table main.events has no column "aggregate_id" (table.field.event.key)`, mapping.ErrMissingColumn},
		{"wrong type", map[string]string{"table.field.event.payload": "version"},
			`table main.events: column "version" (table.field.event.payload) is INTEGER; table.field.event.payload needs json or text or bytes`, mapping.ErrColumnType},
		{"missing table", map[string]string{"table.name": "evnts"}, "table main.evnts does not exist", mapping.ErrNoTable},
		{"unknown schema", map[string]string{"table.name": "other.events"}, "table other.events does not exist", mapping.ErrNoTable},
		{"a view", map[string]string{"table.name": "events_view"}, "main.events_view is a view", mapping.ErrNoTable},
		{"a rowid that is reused", map[string]string{"table.name": "plain_rowid"}, `INTEGER PRIMARY KEY "seq" is not declared AUTOINCREMENT`, mapping.ErrUnsafeOrder},
		{"no key", map[string]string{"table.name": "no_key"}, "it has no INTEGER PRIMARY KEY", mapping.ErrUnsafeOrder},
		{"without rowid", map[string]string{"table.name": "no_rowid"}, "WITHOUT ROWID", mapping.ErrUnsafeOrder},
		{"another order column", map[string]string{"table.field.poll.position": "version"}, `"version" is not its INTEGER PRIMARY KEY "seq"`, mapping.ErrUnsafeOrder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := keys("x")
			for key, v := range tc.keys {
				k[key] = v
			}
			m, err := mapping.Parse(k)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Table(ctx, sqlite.TableConfig{Mapping: &m})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) || !errors.Is(err, mapping.ErrInvalid) {
				t.Fatalf("error %v, want one saying %q, %v and ErrInvalid", err, tc.want, tc.is)
			}
		})
	}
}

// Deleting every row the relay read, the newest included, and writing
// again: AUTOINCREMENT gives the new row a key past the checkpoint, so it
// is read. Without AUTOINCREMENT SQLite gives the deleted key again and a
// reader past it would never see the row: the reason such a table is
// refused.
func TestPollingSurvivesDeletingWhatWasRead(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	createTable(t, s, layout{body: "TEXT", eventID: "TEXT", create: "INTEGER"})
	m, err := mapping.Parse(keys("x"))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := s.Table(ctx, sqlite.TableConfig{Mapping: &m})
	if err != nil {
		t.Fatal(err)
	}
	insert := func(table string, version int) {
		if _, err := s.DB().ExecContext(ctx, `INSERT INTO `+table+` (event_id, agg_type, agg_id, event_type, body, created, version)
			VALUES (?, 'payment', 'p-1', 'T', '{}', 1772600767000, ?)`, uuid.NewString(), version); err != nil {
			t.Fatal(err)
		}
	}
	insert("events", 1)
	insert("events", 2)
	recs, err := tbl.Fetch(ctx, "", 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("read %d (%v)", len(recs), err)
	}
	if _, err := s.DB().ExecContext(ctx, `DELETE FROM events`); err != nil {
		t.Fatal(err)
	}
	insert("events", 3)
	more, err := tbl.Fetch(ctx, recs[1].Position, 10)
	if err != nil || len(more) != 1 || more[0].Message.Sequence != 3 {
		t.Fatalf("after deleting what was read, the next row was not read: %v (%v)", more, err)
	}

	if _, err := s.DB().ExecContext(ctx, `CREATE TABLE plain (seq INTEGER PRIMARY KEY, event_id TEXT, agg_type TEXT, agg_id TEXT,
		event_type TEXT, body TEXT, created INTEGER, tenant TEXT, version INTEGER)`); err != nil {
		t.Fatal(err)
	}
	insert("plain", 1)
	insert("plain", 2)
	if _, err := s.DB().ExecContext(ctx, `DELETE FROM plain`); err != nil {
		t.Fatal(err)
	}
	insert("plain", 3)
	var seq int64
	if err := s.DB().QueryRowContext(ctx, `SELECT seq FROM plain`).Scan(&seq); err != nil || seq > 2 {
		t.Fatalf("without AUTOINCREMENT the new row got key %d (%v): the premise of refusing such tables no longer holds", seq, err)
	}
}

// Outbox's own table read through its mapping passes the conformance
// suite: the mapped path is the same source as Store's own.
func TestConformanceThroughTheMapping(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
		s := open(t)
		tbl, err := s.Table(t.Context(), sqlite.TableConfig{})
		if err != nil {
			t.Fatal(err)
		}
		src, err := poll.NewSource(tbl, poll.Config{Interval: time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{Store: s, Source: src, Append: func(ctx context.Context, msgs []outbox.Message, fail bool) error {
			return s.Transact(ctx, func(tx *sql.Tx) error {
				if err := s.Append(ctx, tx, msgs...); err != nil {
					return err
				}
				if fail {
					return errors.New("rolled back on purpose")
				}
				return nil
			})
		}}
	})
}

// SQLite's typing is dynamic: a BLOB column may hold a number, a TEXT id
// column something that is no UUID. Such a row is a dead letter; the rows
// around it are read.
func TestAnOddSQLiteValueIsARowNotAStop(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	createTable(t, s, layout{body: "BLOB", eventID: "TEXT", create: "INTEGER"})
	m, err := mapping.Parse(keys("x"))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := s.Table(ctx, sqlite.TableConfig{Mapping: &m})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO events (event_id, agg_type, agg_id, event_type, body, created, version) VALUES
		(?, 'payment', 'p-1', 'T', 42, 1772600767000, 1),
		('not-a-uuid', 'payment', 'p-1', 'T', x'00', 1772600767000, 2),
		(?, 'payment', 'p-2', 'T', 4.5, 'not a time', 1),
		(?, 'payment', 'p-3', 'T', x'01', 1772600767000, 1)`, uuid.NewString(), uuid.NewString(), uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	recs, err := tbl.Fetch(ctx, "", 10)
	if err != nil || len(recs) != 4 {
		t.Fatalf("read %d rows (%v), want 4", len(recs), err)
	}
	if recs[0].Err != nil || string(recs[0].Message.Payload) != "42" || recs[3].Err != nil {
		t.Errorf("good rows: %+v / %+v", recs[0], recs[3])
	}
	for _, i := range []int{1, 2} {
		if !errors.Is(recs[i].Err, mapping.ErrRow) || recs[i].Message.AggregateType != "payment" {
			t.Errorf("row %d: %+v, want a dead letter of its aggregate", i, recs[i])
		}
	}
}
