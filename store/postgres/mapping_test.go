package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/storetest"
)

// These tests read a table that is not outbox's own: Debezium's outbox
// layout, created by plain SQL with other column names, written by plain
// INSERTs as another application would.

// createEvents creates shop.<name> with its payload column body of type
// payloadType.
func createEvents(t *testing.T, s *postgres.Store, name, payloadType string) {
	t.Helper()
	if _, err := s.Pool().Exec(t.Context(), `CREATE SCHEMA IF NOT EXISTS shop;
		CREATE TABLE shop.`+name+` (
			event_id   uuid PRIMARY KEY,
			agg_type   varchar(255) NOT NULL,
			agg_id     varchar(255) NOT NULL,
			event_type varchar(255) NOT NULL,
			body       `+payloadType+`,
			created    timestamptz NOT NULL,
			tenant     text,
			version    bigint NOT NULL
		)`); err != nil {
		t.Fatal(err)
	}
}

// eventsKeys is the mapping of createEvents's tables, as Debezium keys.
func eventsKeys(table, topicPrefix string) map[string]string {
	return map[string]string{
		"table.name":                        "shop." + table,
		"table.field.event.id":              "event_id",
		"table.field.event.key":             "agg_id",
		"table.field.event.type":            "event_type",
		"table.field.event.payload":         "body",
		"table.field.event.timestamp":       "created",
		"table.field.event.sequence":        "version",
		"route.by.field":                    "agg_type",
		"route.topic.replacement":           topicPrefix + ".${routedByValue}",
		"table.fields.additional.placement": "tenant:header,event_type:header:eventType",
	}
}

func parseMapping(t *testing.T, keys map[string]string) mapping.Mapping {
	t.Helper()
	m, err := mapping.Parse(keys)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// event is one row of an events table.
type event struct {
	id              uuid.UUID
	aggType, aggID  string
	typ             string
	body            []byte // nil: NULL
	created         time.Time
	tenant          *string
	version         int64
	wantValue       []byte // what the record's value must be
	wantNullPayload bool
}

// insertEvents writes events by plain SQL, a transaction per group.
func insertEvents(t *testing.T, s *postgres.Store, table, payloadType string, groups ...[]event) {
	t.Helper()
	for _, g := range groups {
		err := pgx.BeginFunc(t.Context(), s.Pool(), func(tx pgx.Tx) error {
			for _, e := range g {
				var body any = e.body
				switch {
				case e.body == nil:
					body = nil
				case payloadType != "bytea":
					body = string(e.body)
				}
				if _, err := tx.Exec(t.Context(), `INSERT INTO shop.`+table+` (event_id, agg_type, agg_id, event_type, body, created, tenant, version)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, e.id, e.aggType, e.aggID, e.typ, body, e.created, e.tenant, e.version); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// someEvents are two aggregates' events of a payload type, in groups that
// commit together; their values are what Kafka must carry.
func someEvents(payloadType string) [][]event {
	acme := "acme"
	base := time.Date(2026, 3, 4, 5, 6, 7, 123000000, time.UTC)
	var groups [][]event
	n := 0
	mk := func(aggType, aggID string, version int64, tenant *string) event {
		n++
		e := event{id: uuid.Must(uuid.NewV7()), aggType: aggType, aggID: aggID, typ: fmt.Sprintf("Step%d", version),
			created: base.Add(time.Duration(n) * time.Second), tenant: tenant, version: version}
		switch payloadType {
		case "jsonb":
			// jsonb's own text: what PostgreSQL prints is what is sent.
			e.body = fmt.Appendf(nil, `{"n": %d, "aggregate": "%s"}`, n, aggID)
		case "json":
			e.body = fmt.Appendf(nil, `{ "n":%d,  "kept": "as written" }`, n)
		case "text":
			e.body = fmt.Appendf(nil, "plain text, not JSON: ünïcödé №%d", n)
		case "bytea":
			e.body = []byte{0x00, 0xff, 0xfe, byte(n), '\\', 'x', 0x80}
		}
		e.wantValue = e.body
		return e
	}
	groups = append(groups,
		[]event{mk("payment", "p-1", 1, &acme), mk("payment", "p-1", 2, &acme)}, // one transaction, two events
		[]event{mk("refund", "r-9", 1, nil)},                                    // no tenant: no tenant header
		[]event{mk("payment", "p-2", 1, &acme)},
		[]event{mk("payment", "p-1", 3, &acme), mk("refund", "r-9", 2, nil)},
	)
	return groups
}

// readTopics reads every record of topics from the start until want have
// come, with their timestamps (kafkatest.ReadAll leaves those out).
func readTopics(t *testing.T, brokers []string, topics []string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	if len(out) != want {
		t.Fatalf("read %d records from %v, want %d", len(out), topics, want)
	}
	return out
}

func headers(r *kgo.Record) map[string]string {
	h := map[string]string{}
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}

// checkRecords holds every record to the row it came from: topic, key,
// value, timestamp and headers, and each aggregate's order.
func checkRecords(t *testing.T, prefix string, groups [][]event, recs []*kgo.Record) {
	t.Helper()
	byID := map[string]event{}
	for _, g := range groups {
		for _, e := range g {
			byID[e.id.String()] = e
		}
	}
	last := map[string]int64{}
	for _, r := range recs {
		h := headers(r)
		e, ok := byID[h["id"]]
		if !ok {
			t.Fatalf("record with id header %q, which no row has", h["id"])
		}
		delete(byID, h["id"])
		want := map[string]string{"id": e.id.String(), "type": e.typ, "aggregatetype": e.aggType, "aggregateid": e.aggID,
			"sequence": strconv.FormatInt(e.version, 10), "eventType": e.typ}
		if e.tenant != nil {
			want["tenant"] = *e.tenant
		}
		if fmt.Sprint(h) != fmt.Sprint(want) {
			t.Errorf("event %s: headers %v, want %v", e.id, h, want)
		}
		if r.Topic != prefix+"."+e.aggType || string(r.Key) != e.aggID {
			t.Errorf("event %s: topic %q key %q, want %q and %q", e.id, r.Topic, r.Key, prefix+"."+e.aggType, e.aggID)
		}
		if !bytes.Equal(r.Value, e.wantValue) || (r.Value == nil) != (e.wantValue == nil) {
			t.Errorf("event %s: value %q, want %q", e.id, r.Value, e.wantValue)
		}
		if !r.Timestamp.Equal(e.created.Truncate(time.Millisecond)) {
			t.Errorf("event %s: timestamp %v, want the created column's %v", e.id, r.Timestamp, e.created)
		}
		key := e.aggType + "/" + e.aggID
		if e.version <= last[key] {
			t.Errorf("aggregate %s: version %d after %d", key, e.version, last[key])
		}
		last[key] = e.version
	}
	for id := range byID {
		t.Errorf("event %s never reached Kafka", id)
	}
}

// embedded starts kfake for one test.
func embedded(t *testing.T) []string {
	t.Helper()
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addrs()
}

// mappedSource is the source of kind over the mapped table, set up before
// the first write.
func mappedSource(t *testing.T, s *postgres.Store, kind string, m mapping.Mapping) outbox.Source {
	t.Helper()
	switch kind {
	case "cdc":
		src := cdc(t, s, postgres.CDCConfig{Mapping: &m})
		if _, err := src.Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
		return src
	case "poll":
		ddl, err := postgres.PollSetupSQL(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Pool().Exec(t.Context(), ddl); err != nil {
			t.Fatalf("%v\n%s", err, ddl)
		}
		tbl, err := s.Table(t.Context(), postgres.TableConfig{Mapping: &m})
		if err != nil {
			t.Fatal(err)
		}
		src, err := poll.NewSource(tbl, poll.Config{Interval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	t.Fatalf("source %q", kind)
	return nil
}

func TestAMappedTableReachesKafka(t *testing.T) {
	for _, kind := range []string{"cdc", "poll"} {
		for _, payloadType := range []string{"jsonb", "json", "text", "bytea"} {
			t.Run(kind+"/"+payloadType, func(t *testing.T) {
				s, _ := newDB(t)
				brokers := embedded(t)
				table := "events_" + payloadType
				createEvents(t, s, table, payloadType)
				prefix := "byot"
				m := parseMapping(t, eventsKeys(table, prefix))
				src := mappedSource(t, s, kind, m)
				pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: m.TopicTemplate()})
				if err != nil {
					t.Fatal(err)
				}
				defer pub.Close()
				r, err := relay.New(src, pub, s, relay.Config{})
				if err != nil {
					t.Fatal(err)
				}
				testenv.Serve(t, r)
				groups := someEvents(payloadType)
				insertEvents(t, s, table, payloadType, groups...)
				recs := readTopics(t, brokers, []string{prefix + ".payment", prefix + ".refund"}, 6)
				checkRecords(t, prefix, groups, recs)
			})
		}
	}
}

// A NULL or blank payload is a tombstone when route.tombstone.on.empty.payload
// says so, a null value for NULL without it, and blank text as it is.
func TestMappedPayloadsNullAndBlank(t *testing.T) {
	for _, kind := range []string{"cdc", "poll"} {
		t.Run(kind, func(t *testing.T) {
			s, _ := newDB(t)
			brokers := embedded(t)
			createEvents(t, s, "events", "text")
			keys := eventsKeys("events", "tomb")
			keys["route.tombstone.on.empty.payload"] = "true"
			keys["table.name"] = "shop.events"
			m := parseMapping(t, keys)
			src := mappedSource(t, s, kind, m)
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: m.TopicTemplate()})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			r, err := relay.New(src, pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Serve(t, r)
			mk := func(v int64, body []byte) event {
				return event{id: uuid.Must(uuid.NewV7()), aggType: "payment", aggID: "p-1", typ: "T", body: body,
					created: time.Now().UTC(), version: v, wantValue: body}
			}
			groups := [][]event{{mk(1, nil), mk(2, []byte("  ")), mk(3, []byte("kept"))}}
			groups[0][1].wantValue = nil // blank: a tombstone
			insertEvents(t, s, "events", "text", groups...)
			recs := readTopics(t, brokers, []string{"tomb.payment"}, 3)
			for i, want := range [][]byte{nil, nil, []byte("kept")} {
				if !bytes.Equal(recs[i].Value, want) || (recs[i].Value == nil) != (want == nil) {
					t.Errorf("record %d: value %q, want %q", i, recs[i].Value, want)
				}
			}
		})
	}
}

// A bad mapping fails when the source is set up, with a message that names
// the table, the column and the key; polling also refuses a table it
// could skip rows of.
func TestABadMappingFailsAtStartNamingTheColumn(t *testing.T) {
	s, _ := newDB(t)
	createEvents(t, s, "events", "jsonb")
	if _, err := s.Pool().Exec(t.Context(), `CREATE TABLE shop.seq_only (LIKE shop.events, position bigserial UNIQUE);
		CREATE TABLE shop.no_default (LIKE shop.events, position bigserial UNIQUE, txid xid8 NOT NULL);
		CREATE TABLE shop.no_unique (LIKE shop.events, position bigserial, txid xid8 NOT NULL DEFAULT pg_current_xact_id())`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		keys    map[string]string
		sources []string
		want    []string
		is      []error
	}{
		{name: "missing column", keys: map[string]string{"table.field.event.key": "aggregate_id"}, sources: []string{"cdc", "poll"},
			want: []string{`table shop.events has no column "aggregate_id" (table.field.event.key)`}, is: []error{mapping.ErrMissingColumn}},
		{name: "wrong type", keys: map[string]string{"table.field.event.payload": "created"}, sources: []string{"cdc", "poll"},
			want: []string{`table shop.events: column "created" (table.field.event.payload) is timestamp with time zone`}, is: []error{mapping.ErrColumnType}},
		{name: "sequence of the wrong type", keys: map[string]string{"table.field.event.sequence": "tenant"}, sources: []string{"cdc", "poll"},
			want: []string{`column "tenant" (table.field.event.sequence) is text; table.field.event.sequence needs integer`}, is: []error{mapping.ErrColumnType}},
		{name: "missing header column", keys: map[string]string{"table.fields.additional.placement": "region:header"}, sources: []string{"cdc", "poll"},
			want: []string{`no column "region" (table.fields.additional.placement)`}},
		{name: "missing table", keys: map[string]string{"table.name": "shop.evnts"}, sources: []string{"cdc", "poll"},
			want: []string{"table shop.evnts does not exist"}, is: []error{mapping.ErrNoTable}},
		{name: "polling without ordering columns", keys: nil, sources: []string{"poll"},
			want: []string{`no column "position" (table.field.poll.position)`, `no column "txid" (table.field.poll.txid)`, "PollSetupSQL", "--source cdc"},
			is:   []error{mapping.ErrUnsafeOrder, mapping.ErrMissingColumn}},
		{name: "polling by a sequence alone", keys: map[string]string{"table.name": "shop.seq_only"}, sources: []string{"poll"},
			want: []string{`no column "txid" (table.field.poll.txid)`, "would be skipped"}, is: []error{mapping.ErrUnsafeOrder}},
		{name: "txid the writer fills in", keys: map[string]string{"table.name": "shop.no_default"}, sources: []string{"poll"},
			want: []string{`column "txid" (table.field.poll.txid) must default to pg_current_xact_id()`}, is: []error{mapping.ErrUnsafeOrder}},
		{name: "position not unique", keys: map[string]string{"table.name": "shop.no_unique"}, sources: []string{"poll"},
			want: []string{`column "position" (table.field.poll.position) needs a unique index`}, is: []error{mapping.ErrUnsafeOrder}},
	} {
		for _, kind := range tc.sources {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				keys := eventsKeys("events", "x")
				for k, v := range tc.keys {
					keys[k] = v
				}
				m := parseMapping(t, keys)
				var err error
				if kind == "cdc" {
					_, err = cdc(t, s, postgres.CDCConfig{Mapping: &m}).Setup(t.Context())
					if err != nil && !outbox.IsFatal(err) {
						t.Errorf("a mapping that does not fit is not fatal: %v", err)
					}
				} else {
					_, err = s.Table(t.Context(), postgres.TableConfig{Mapping: &m})
				}
				if err == nil {
					t.Fatal("started")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error\n %v\ndoes not say\n %s", err, w)
					}
				}
				for _, target := range append(tc.is, mapping.ErrInvalid) {
					if !errors.Is(err, target) {
						t.Errorf("error %v is not %v", err, target)
					}
				}
			})
		}
	}
	// Nothing was created for the refused CDC mappings.
	var pubs int
	if err := s.Pool().QueryRow(t.Context(), `SELECT count(*) FROM pg_publication`).Scan(&pubs); err != nil || pubs != 0 {
		t.Fatalf("%d publications after refused setups (%v)", pubs, err)
	}
}

// pollable creates shop.<name> and makes it pollable: with the statements
// of PollSetupSQL, or only its columns and indexes (no trigger).
func pollable(t *testing.T, s *postgres.Store, name string, trigger bool) (*postgres.Table, mapping.Mapping) {
	t.Helper()
	createEvents(t, s, name, "jsonb")
	m := parseMapping(t, eventsKeys(name, "x"))
	ddl, err := postgres.PollSetupSQL(m)
	if err != nil {
		t.Fatal(err)
	}
	if !trigger {
		ddl = ddl[:strings.Index(ddl, "CREATE TABLE IF NOT EXISTS outbox_aggregate_heads")]
	}
	if _, err := s.Pool().Exec(t.Context(), ddl); err != nil {
		t.Fatalf("%v\n%s", err, ddl)
	}
	tbl, err := s.Table(t.Context(), postgres.TableConfig{Mapping: &m})
	if err != nil {
		t.Fatal(err)
	}
	return tbl, m
}

func ev(aggID string, version int64) event {
	return event{id: uuid.Must(uuid.NewV7()), aggType: "payment", aggID: aggID, typ: "T", body: []byte(`{}`),
		created: time.Now().UTC(), version: version}
}

func insertIn(t *testing.T, tx pgx.Tx, table string, e event) {
	t.Helper()
	if _, err := tx.Exec(t.Context(), `INSERT INTO shop.`+table+` (event_id, agg_type, agg_id, event_type, body, created, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.id, e.aggType, e.aggID, e.typ, string(e.body), e.created, e.version); err != nil {
		t.Fatal(err)
	}
}

// fetchAll polls the table from the start until it returns want rows.
func fetchAll(t *testing.T, tbl *postgres.Table, want int) []outbox.Record {
	t.Helper()
	var recs []outbox.Record
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d rows polled", want), func() bool {
		var err error
		if recs, err = tbl.Fetch(t.Context(), "", 100); err != nil {
			t.Fatal(err)
		}
		return len(recs) >= want
	})
	return recs
}

// A row inserted first by a transaction that commits last is not skipped:
// polling by the position column alone would read the later row, move
// past the earlier one, and never read it.
func TestPollingAMappedTableSkipsNoLateCommit(t *testing.T) {
	s, _ := newDB(t)
	tbl, _ := pollable(t, s, "events", true)
	ctx := t.Context()
	early, late := ev("p-1", 1), ev("p-2", 1)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	insertIn(t, tx, "events", early) // the lower position, still uncommitted
	insertEvents(t, s, "events", "jsonb", []event{late})
	recs, err := tbl.Fetch(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("read %d rows while a transaction that wrote before them runs: the cursor would pass its row", len(recs))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	recs = fetchAll(t, tbl, 2)
	if len(recs) != 2 || recs[0].Message.ID != early.id || recs[1].Message.ID != late.id {
		t.Fatalf("read %v, want the early row then the late one", recs)
	}
}

// T1 takes its transaction id first (it writes elsewhere), T2 writes the
// aggregate's version 1 and commits, then T1 writes version 2. With the
// trigger of PollSetupSQL polling reads 1 then 2; without it, in
// transaction id order, 2 comes first: the condition the documentation
// states for writers.
func TestPollingAMappedTableKeepsAnAggregatesCommitOrderWithTheTrigger(t *testing.T) {
	for _, trigger := range []bool{true, false} {
		t.Run(fmt.Sprintf("trigger=%v", trigger), func(t *testing.T) {
			s, _ := newDB(t)
			tbl, _ := pollable(t, s, "events", trigger)
			ctx := t.Context()
			if _, err := s.Pool().Exec(ctx, `CREATE TABLE elsewhere (x int)`); err != nil {
				t.Fatal(err)
			}
			v1, v2 := ev("p-1", 1), ev("p-1", 2)
			t1, err := s.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer t1.Rollback(ctx)
			if _, err := t1.Exec(ctx, `INSERT INTO elsewhere VALUES (1)`); err != nil {
				t.Fatal(err)
			}
			insertEvents(t, s, "events", "jsonb", []event{v1})
			insertIn(t, t1, "events", v2)
			if err := t1.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			recs := fetchAll(t, tbl, 2)
			got := []int64{recs[0].Message.Sequence, recs[1].Message.Sequence}
			want := []int64{1, 2}
			if !trigger {
				want = []int64{2, 1}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("read versions %v, want %v", got, want)
			}
		})
	}
}

// The database's own settings (date style, time zone, bytea output)
// change how PostgreSQL prints values; CDC and polling read the same
// message whatever they are, header texts included.
func TestMappedSourcesReadTheSameWhateverTheSessionSettings(t *testing.T) {
	s, dsn := newDB(t)
	ctx := t.Context()
	createEvents(t, s, "events", "bytea")
	db := strings.TrimPrefix(strings.SplitN(dsn, "?", 2)[0][strings.LastIndex(strings.SplitN(dsn, "?", 2)[0], "/"):], "/")
	if _, err := s.Pool().Exec(ctx, `ALTER TABLE shop.events ADD COLUMN flag boolean;
		ALTER DATABASE `+db+` SET DateStyle = 'SQL, DMY';
		ALTER DATABASE `+db+` SET TimeZone = 'America/St_Johns';
		ALTER DATABASE `+db+` SET bytea_output = 'escape'`); err != nil {
		t.Fatal(err)
	}
	s2, err := postgres.Open(ctx, dsn) // its sessions take the database's settings
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var style string
	if err := s2.Pool().QueryRow(ctx, `SHOW DateStyle`).Scan(&style); err != nil || style != "SQL, DMY" {
		t.Fatalf("the database's DateStyle did not apply: %q %v", style, err)
	}
	keys := eventsKeys("events", "x")
	keys["table.fields.additional.placement"] = "created:header,flag:header,tenant:header"
	m := parseMapping(t, keys)
	cdcSrc := mappedSource(t, s2, "cdc", m)
	pollSrc := mappedSource(t, s2, "poll", m)
	e := ev("p-1", 1)
	e.body = []byte{0, 1, 0xff, '\\'}
	e.created = time.Date(2026, 3, 4, 5, 6, 7, 120000000, time.UTC)
	if _, err := s2.Pool().Exec(ctx, `INSERT INTO shop.events (event_id, agg_type, agg_id, event_type, body, created, version, flag, tenant)
		VALUES ($1, 'payment', 'p-1', 'T', $2, $3, 1, true, 'acme')`, e.id, e.body, e.created); err != nil {
		t.Fatal(err)
	}
	var got []outbox.Message
	for _, src := range []outbox.Source{cdcSrc, pollSrc} {
		cur, err := src.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs := drain(t, cur, 1, 20*time.Second)
		cur.Close()
		if len(recs) != 1 || recs[0].Err != nil {
			t.Fatalf("read %v", recs)
		}
		got = append(got, recs[0].Message)
	}
	want := map[string]string{"created": "2026-03-04 05:06:07.12+00", "flag": "t", "tenant": "acme"}
	for i, m := range got {
		if !bytes.Equal(m.Payload, e.body) || !m.Timestamp.Equal(e.created) || fmt.Sprint(m.Headers) != fmt.Sprint(want) {
			t.Errorf("source %d: payload %q time %v headers %v; want %q %v %v", i, m.Payload, m.Timestamp, m.Headers, e.body, e.created, want)
		}
	}
}

// A row the mapping cannot decode (an id that is no UUID, in a text
// column) is dead-lettered with the reason and parks its aggregate; other
// aggregates flow on.
func TestAnUndecodableMappedRowIsDeadLetteredAndTheRestFlow(t *testing.T) {
	for _, kind := range []string{"cdc", "poll"} {
		t.Run(kind, func(t *testing.T) {
			s, _ := newDB(t)
			ctx := t.Context()
			createEvents(t, s, "events", "jsonb")
			if _, err := s.Pool().Exec(ctx, `ALTER TABLE shop.events ALTER COLUMN event_id TYPE text`); err != nil {
				t.Fatal(err)
			}
			brokers := embedded(t)
			m := parseMapping(t, eventsKeys("events", "bad"))
			src := mappedSource(t, s, kind, m)
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: m.TopicTemplate()})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			r, err := relay.New(src, pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Serve(t, r)
			if _, err := s.Pool().Exec(ctx, `INSERT INTO shop.events (event_id, agg_type, agg_id, event_type, body, created, version) VALUES
				($1, 'payment', 'p-1', 'T', '{}', now(), 1),
				('not-a-uuid', 'payment', 'p-1', 'T', '{}', now(), 2),
				($2, 'payment', 'p-1', 'T', '{}', now(), 3),
				($3, 'payment', 'p-2', 'T', '{}', now(), 1)`, uuid.NewString(), uuid.NewString(), uuid.NewString()); err != nil {
				t.Fatal(err)
			}
			recs := readTopics(t, brokers, []string{"bad.payment"}, 2)
			if string(recs[0].Key)+string(recs[1].Key) != "p-1p-2" && string(recs[0].Key)+string(recs[1].Key) != "p-2p-1" {
				t.Fatalf("published %q and %q, want p-1's first event and p-2's", recs[0].Key, recs[1].Key)
			}
			var parked []outbox.DeadLetter
			testenv.Eventually(t, 10*time.Second, "p-1 parked behind the bad row", func() bool {
				parked, err = s.ParkedMessages(ctx, outbox.AggregateKey{Type: "payment", ID: "p-1"})
				return err == nil && len(parked) == 2
			})
			if !strings.Contains(parked[0].Error, `column "event_id" (table.field.event.id): not a UUID`) || parked[1].Message.Sequence != 3 {
				t.Fatalf("parked %+v", parked)
			}
		})
	}
}

// A table altered under a running stream so that it no longer fits the
// mapping stops the stream with a fatal error naming the column, rather
// than publishing records without it.
func TestCDCStopsWhenItsTableNoLongerFitsTheMapping(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	createEvents(t, s, "events", "jsonb")
	m := parseMapping(t, eventsKeys("events", "x"))
	src := mappedSource(t, s, "cdc", m)
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	insertEvents(t, s, "events", "jsonb", []event{ev("p-1", 1)})
	if recs := drain(t, cur, 1, 10*time.Second); len(recs) != 1 {
		t.Fatalf("read %d", len(recs))
	}
	if _, err := s.Pool().Exec(ctx, `ALTER TABLE shop.events DROP COLUMN tenant`); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error { insertIn(t, tx, "events", ev("p-1", 2)); return nil }); err != nil {
		t.Fatal(err)
	}
	var nextErr error
	testenv.Eventually(t, 10*time.Second, "the stream stops", func() bool {
		_, nextErr = cur.Next(ctx, 10)
		return nextErr != nil
	})
	if !outbox.IsFatal(nextErr) || !errors.Is(nextErr, mapping.ErrMissingColumn) || !strings.Contains(nextErr.Error(), `"tenant"`) {
		t.Fatalf("stream ended with %v, want a fatal error naming column tenant", nextErr)
	}
}

// A mapped table's payload may be text, bytes or NULL, which the JSONB
// dead-letter column refuses: such a dead letter is kept all the same and
// given back byte for byte, so a replay publishes what the row held (the
// relay would otherwise retry it forever, its aggregate stalled).
func TestDeadLettersKeepPayloadsThatAreNotJSON(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	for i, payload := range [][]byte{[]byte("plain text"), {0, 0xff, '"', '\\'}, nil, []byte(`{"n": 1}`), []byte(`{"outbox.nonjson.payload": 3}`), {}} {
		m := outbox.Message{ID: uuid.New(), AggregateType: "payment", AggregateID: fmt.Sprint("p-", i), Type: "T", Payload: payload,
			Timestamp: time.Now().UTC().Truncate(time.Microsecond)}
		if _, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: m, Error: "too large", FailureCount: 1,
			FirstFailedAt: time.Now(), LastFailedAt: time.Now()}); err != nil {
			t.Fatalf("payload %q: %v", payload, err)
		}
		parked, err := s.ParkedMessages(ctx, m.Key())
		if err != nil || len(parked) != 1 {
			t.Fatalf("payload %q: parked %v (%v)", payload, parked, err)
		}
		if got := parked[0].Message.Payload; !bytes.Equal(got, payload) || (got == nil) != (payload == nil) {
			t.Errorf("payload %q came back as %q", payload, got)
		}
	}
}

// Outbox's own table read through its mapping passes the conformance
// suite: the mapped path is the same source as Store's own. A read ends
// after a second without records: the horizon is the whole server's, and
// other databases' transactions hold it back for a while.
func TestConformancePollingThroughTheMapping(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true, ReadIdle: time.Second}, func(t *testing.T) storetest.Harness {
		s, _ := newDB(t)
		tbl, err := s.Table(t.Context(), postgres.TableConfig{})
		if err != nil {
			t.Fatal(err)
		}
		src, err := poll.NewSource(tbl, poll.Config{Interval: 5 * time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{Store: s, Source: src, Append: appendFunc(s)}
	})
}

// Debezium's own example: a table public.outbox with its default column
// names, and a configuration that names only the table. Its name is the
// one outbox's migrations give their own table, so the relay's tables go
// to a schema of their own, through the DSN's search_path.
func TestDebeziumsDefaultTableBesideOutboxsOwn(t *testing.T) {
	for _, kind := range []string{"cdc", "poll"} {
		t.Run(kind, func(t *testing.T) {
			dsn := testenv.PostgresDatabase(t)
			ctx := t.Context()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `CREATE SCHEMA relay;
				CREATE TABLE public.outbox (
					id            uuid NOT NULL PRIMARY KEY,
					aggregatetype varchar(255) NOT NULL,
					aggregateid   varchar(255) NOT NULL,
					type          varchar(255) NOT NULL,
					payload       jsonb
				)`); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
			s, err := postgres.Open(ctx, withParam(t, dsn, "search_path", "relay"))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Migrate(ctx); err != nil {
				t.Fatalf("the relay's tables beside a table named outbox: %v", err)
			}
			m := parseMapping(t, map[string]string{"table.name": "public.outbox"})
			src := mappedSource(t, s, kind, m)
			brokers := embedded(t)
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: m.TopicTemplate()})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			r, err := relay.New(src, pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Serve(t, r)
			// The application writes with its own search_path, which
			// does not see the relay's schema.
			app, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close(ctx)
			id := uuid.New()
			if _, err := app.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
				VALUES ($1, 'customers', '42', 'CustomerCreated', '{"name": "Ada"}')`, id); err != nil {
				t.Fatal(err)
			}
			recs := readTopics(t, brokers, []string{"outbox.event.customers"}, 1)
			h := headers(recs[0])
			if string(recs[0].Key) != "42" || string(recs[0].Value) != `{"name": "Ada"}` || h["id"] != id.String() ||
				h["type"] != "CustomerCreated" || h["sequence"] != "0" {
				t.Fatalf("record key %q value %q headers %v", recs[0].Key, recs[0].Value, h)
			}
			var own int
			if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM relay.outbox`).Scan(&own); err != nil || own != 0 {
				t.Fatalf("outbox's own table has %d rows (%v)", own, err)
			}
		})
	}
}

// A common Debezium habit: the writer deletes its outbox row in the same
// transaction that inserts it, so the table stays empty. CDC still
// publishes the insert (the publication carries inserts only, and deletes
// are never read). Polling cannot see such a row: it needs rows to stay
// until read.
func TestCDCPublishesARowDeletedInItsOwnTransaction(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	createEvents(t, s, "events", "jsonb")
	brokers := embedded(t)
	m := parseMapping(t, eventsKeys("events", "gone"))
	src := mappedSource(t, s, "cdc", m)
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: m.TopicTemplate()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	r, err := relay.New(src, pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	e := ev("p-1", 1)
	if err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
		insertIn(t, tx, "events", e)
		_, err := tx.Exec(ctx, `DELETE FROM shop.events WHERE event_id = $1`, e.id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	recs := readTopics(t, brokers, []string{"gone.payment"}, 1)
	if h := headers(recs[0]); h["id"] != e.id.String() {
		t.Fatalf("published %v, want the deleted row's event", h)
	}
}
