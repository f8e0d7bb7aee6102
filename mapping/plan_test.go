package mapping_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
)

// A Debezium-layout table with other column names, as a store would
// describe it.
var eventsTable = []mapping.Column{
	{Name: "seq", Type: "bigint", Kind: mapping.KindInteger},
	{Name: "event_id", Type: "uuid", Kind: mapping.KindUUID},
	{Name: "agg_type", Type: "text", Kind: mapping.KindText},
	{Name: "agg_id", Type: "text", Kind: mapping.KindText},
	{Name: "event_type", Type: "text", Kind: mapping.KindText},
	{Name: "body", Type: "jsonb", Kind: mapping.KindJSON},
	{Name: "created", Type: "timestamptz", Kind: mapping.KindTime},
	{Name: "tenant", Type: "text", Kind: mapping.KindText},
	{Name: "version", Type: "integer", Kind: mapping.KindInteger},
	{Name: "txid", Type: "xid8", Kind: mapping.KindTxID},
	{Name: "blob", Type: "bytea", Kind: mapping.KindBytes, Format: mapping.FormatHex},
	{Name: "flag", Type: "boolean", Kind: mapping.KindBool},
}

func eventsMapping(t testing.TB, extra map[string]string) mapping.Mapping {
	t.Helper()
	keys := map[string]string{
		"table.name": "shop.events", "table.field.event.id": "event_id", "table.field.event.key": "agg_id",
		"table.field.event.type": "event_type", "table.field.event.payload": "body", "table.field.event.timestamp": "created",
		"route.by.field": "agg_type",
	}
	for k, v := range extra {
		keys[k] = v
	}
	m, err := mapping.Parse(keys)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestResolveNamesTheColumnThatDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]string
		order mapping.Order
		want  []string // the errors, each naming table, column and key
		is    error
	}{
		{name: "fits", extra: nil},
		{name: "fits, polled", order: mapping.Order{Position: "seq", TxID: "txid"}},
		{name: "missing key column", extra: map[string]string{"table.field.event.key": "aggregate_id"},
			want: []string{`table shop.events has no column "aggregate_id" (table.field.event.key)`}, is: mapping.ErrMissingColumn},
		{name: "payload of the wrong type", extra: map[string]string{"table.field.event.payload": "created"},
			want: []string{`table shop.events: column "created" (table.field.event.payload) is timestamptz; table.field.event.payload needs json or text or bytes`},
			is:   mapping.ErrColumnType},
		{name: "two at once", extra: map[string]string{"table.field.event.id": "id", "table.field.event.sequence": "tenant"},
			want: []string{`no column "id" (table.field.event.id)`, `column "tenant" (table.field.event.sequence) is text`}},
		{name: "polling order not an integer", order: mapping.Order{Position: "agg_id"},
			want: []string{`column "agg_id" (table.field.poll.position) is text; table.field.poll.position needs integer`}, is: mapping.ErrColumnType},
		{name: "polling without a txid column", order: mapping.Order{Position: "seq", TxID: "xmin8"},
			want: []string{`no column "xmin8" (table.field.poll.txid)`}, is: mapping.ErrMissingColumn},
		{name: "missing additional column", extra: map[string]string{"table.fields.additional.placement": "region:header"},
			want: []string{`no column "region" (table.fields.additional.placement)`}},
		{name: "missing additional column ignored", extra: map[string]string{"table.fields.additional.placement": "region:header",
			"table.field.additional.missing": "ignore"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := eventsMapping(t, tc.extra).Resolve("shop.events", eventsTable, tc.order)
			if len(tc.want) == 0 {
				if err != nil || p == nil {
					t.Fatalf("%v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("resolved a mapping that does not fit")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n %v\ndoes not say\n %s", err, w)
				}
			}
			var ce *mapping.ColumnError
			if !errors.As(err, &ce) || ce.Table != "shop.events" || !errors.Is(err, mapping.ErrInvalid) {
				t.Errorf("error %v is not a *ColumnError marked ErrInvalid", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// row builds a row of eventsTable from column name → text form.
func row(vals map[string]string) [][]byte {
	out := make([][]byte, len(eventsTable))
	for i, c := range eventsTable {
		if v, ok := vals[c.Name]; ok {
			out[i] = []byte(v)
		}
	}
	return out
}

func TestDecode(t *testing.T) {
	id := uuid.MustParse("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071")
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	base := map[string]string{"event_id": id.String(), "agg_type": "payment", "agg_id": "p-1", "event_type": "Captured",
		"body": `{"amount": 5}`, "created": "2026-03-04 05:06:07.123456+00", "tenant": "acme", "version": "7", "blob": `\x00ff10`, "flag": "t"}
	with := func(k, v string) map[string]string {
		out := map[string]string{}
		for a, b := range base {
			out[a] = b
		}
		if v == "\x00NULL" {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	created := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	for _, tc := range []struct {
		name    string
		extra   map[string]string
		vals    map[string]string
		payload string // nil payload: "\x00nil"
		check   func(t *testing.T, m outbox.Message)
		err     string
	}{
		{name: "JSON payload, as its bytes", vals: base, payload: `{"amount": 5}`, check: func(t *testing.T, m outbox.Message) {
			want := outbox.Message{ID: id, AggregateType: "payment", AggregateID: "p-1", Type: "Captured", Payload: []byte(`{"amount": 5}`), Timestamp: created}
			if !reflect.DeepEqual(m, want) {
				t.Errorf("%+v, want %+v", m, want)
			}
		}},
		{name: "text payload, as it is", extra: map[string]string{"table.field.event.payload": "tenant"}, vals: base, payload: "acme"},
		{name: "bytes payload, hex decoded", extra: map[string]string{"table.field.event.payload": "blob"}, vals: base, payload: "\x00\xff\x10"},
		{name: "NULL payload is a null value", vals: with("body", "\x00NULL"), payload: "\x00nil"},
		{name: "blank payload kept without the tombstone setting", vals: with("body", "  "), payload: "  "},
		{name: "blank payload is a tombstone with it", extra: map[string]string{"route.tombstone.on.empty.payload": "true"},
			vals: with("body", " "), payload: "\x00nil"},
		{name: "sequence and headers", extra: map[string]string{"table.field.event.sequence": "version",
			"table.fields.additional.placement": "tenant:header,flag:header:x-flag,version:header:v,event_type:header:type"},
			vals: base, payload: `{"amount": 5}`, check: func(t *testing.T, m outbox.Message) {
				want := map[string]string{"tenant": "acme", "x-flag": "t", "v": "7"}
				if m.Sequence != 7 || !reflect.DeepEqual(m.Headers, want) {
					t.Errorf("sequence %d headers %v, want 7 and %v", m.Sequence, m.Headers, want)
				}
			}},
		{name: "a NULL header column places no header", extra: map[string]string{"table.fields.additional.placement": "tenant:header"},
			vals: with("tenant", "\x00NULL"), payload: `{"amount": 5}`, check: func(t *testing.T, m outbox.Message) {
				if m.Headers != nil {
					t.Errorf("headers %v", m.Headers)
				}
			}},
		{name: "envelope", extra: map[string]string{"table.fields.additional.placement": "tenant:envelope,version:envelope:v,blob:envelope,flag:envelope,created:envelope:at"},
			vals: base, payload: `{"payload":{"amount": 5},"tenant":"acme","v":7,"blob":"AP8Q","flag":true,"at":"2026-03-04 05:06:07.123456+00"}`},
		{name: "envelope of a text payload, expanded", extra: map[string]string{"table.field.event.payload": "tenant",
			"table.fields.additional.placement": "version:envelope", "table.expand.json.payload": "true"},
			vals: with("tenant", ` {"a":1}`), payload: `{"payload":{"a":1},"version":7}`},
		{name: "envelope of a text payload, not expanded", extra: map[string]string{"table.field.event.payload": "tenant",
			"table.fields.additional.placement": "version:envelope"},
			vals: with("tenant", `{"a":1}`), payload: `{"payload":"{\"a\":1}","version":7}`},
		{name: "no timestamp column: the source's time", extra: map[string]string{"table.field.event.timestamp": ""}, vals: base,
			payload: `{"amount": 5}`, check: func(t *testing.T, m outbox.Message) {
				if !m.Timestamp.Equal(at) {
					t.Errorf("timestamp %v, want %v", m.Timestamp, at)
				}
			}},
		{name: "NULL timestamp: the source's time", vals: with("created", "\x00NULL"), payload: `{"amount": 5}`,
			check: func(t *testing.T, m outbox.Message) {
				if !m.Timestamp.Equal(at) {
					t.Errorf("timestamp %v", m.Timestamp)
				}
			}},

		{name: "NULL id", vals: with("event_id", "\x00NULL"), err: `column "event_id" (table.field.event.id): is NULL`},
		{name: "id not a UUID", vals: with("event_id", "42"), err: "not a UUID"},
		{name: "nil UUID", vals: with("event_id", uuid.Nil.String()), err: "nil UUID"},
		{name: "empty key", vals: with("agg_id", ""), err: `column "agg_id" (table.field.event.key): is empty`},
		{name: "NULL type", vals: with("event_type", "\x00NULL"), err: "is NULL"},
		{name: "bad timestamp", vals: with("created", "yesterday"), err: "not a time"},
		{name: "negative sequence", extra: map[string]string{"table.field.event.sequence": "version"}, vals: with("version", "-1"), err: "not an integer of at least 0"},
		{name: "bytea without hex", extra: map[string]string{"table.field.event.payload": "blob"}, vals: with("blob", "abc"), err: "bytea_output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := eventsMapping(t, tc.extra).Resolve("shop.events", eventsTable, mapping.Order{})
			if err != nil {
				t.Fatal(err)
			}
			m, err := p.Decoder().Decode(row(tc.vals), at)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, mapping.ErrRow) || !strings.Contains(err.Error(), "shop.events") {
					t.Fatalf("error %v, want ErrRow naming the table and saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.payload == "\x00nil" {
				if m.Payload != nil {
					t.Errorf("payload %q, want nil", m.Payload)
				}
			} else if string(m.Payload) != tc.payload {
				t.Errorf("payload\n %q\nwant\n %q", m.Payload, tc.payload)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

func TestDecodeIDsAndTimes(t *testing.T) {
	id := uuid.MustParse("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071")
	want := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		name string
		col  mapping.Column // replaces event_id or created
		val  string
	}{
		{"uuid text", mapping.Column{Name: "event_id", Kind: mapping.KindUUID}, id.String()},
		{"uuid in text, no dashes", mapping.Column{Name: "event_id", Kind: mapping.KindText}, strings.ReplaceAll(id.String(), "-", "")},
		{"uuid as 16 bytes (SQLite BLOB)", mapping.Column{Name: "event_id", Kind: mapping.KindBytes}, string(id[:])},
		{"uuid as bytea", mapping.Column{Name: "event_id", Kind: mapping.KindBytes, Format: mapping.FormatHex}, `\x` + strings.ReplaceAll(id.String(), "-", "")},
		{"timestamptz", mapping.Column{Name: "created", Kind: mapping.KindTime}, "2026-03-04 05:06:07+00"},
		{"timestamptz, other zone", mapping.Column{Name: "created", Kind: mapping.KindTime}, "2026-03-04 10:36:07+05:30"},
		{"timestamp without zone is UTC", mapping.Column{Name: "created", Kind: mapping.KindTime}, "2026-03-04 05:06:07"},
		{"RFC 3339", mapping.Column{Name: "created", Kind: mapping.KindText}, "2026-03-04T05:06:07Z"},
		{"RFC 3339 with offset", mapping.Column{Name: "created", Kind: mapping.KindText}, "2026-03-04T06:06:07+01:00"},
		{"seconds", mapping.Column{Name: "created", Kind: mapping.KindInteger}, "1772600767"},
		{"milliseconds", mapping.Column{Name: "created", Kind: mapping.KindInteger}, "1772600767000"},
		{"microseconds", mapping.Column{Name: "created", Kind: mapping.KindInteger}, "1772600767000000"},
		{"nanoseconds", mapping.Column{Name: "created", Kind: mapping.KindInteger}, "1772600767000000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cols := append([]mapping.Column(nil), eventsTable...)
			vals := map[string]string{"event_id": id.String(), "agg_type": "a", "agg_id": "1", "event_type": "T", "body": "{}",
				"created": "2026-03-04 05:06:07+00"}
			for i := range cols {
				if cols[i].Name == tc.col.Name {
					cols[i] = tc.col
				}
			}
			vals[tc.col.Name] = tc.val
			p, err := eventsMapping(t, nil).Resolve("shop.events", cols, mapping.Order{})
			if err != nil {
				t.Fatal(err)
			}
			m, err := p.Decoder().Decode(row(vals), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if m.ID != id || !m.Timestamp.Equal(want) || m.Timestamp.Location() != time.UTC {
				t.Fatalf("id %s time %v, want %s %v", m.ID, m.Timestamp, id, want)
			}
		})
	}
}

// The hot path: a row of the usual shape costs two allocations, its
// aggregate id and its payload. The event and aggregate types repeat and
// are not copied again.
func TestDecodeAllocatesOnlyTheAggregateIDAndThePayload(t *testing.T) {
	p, err := eventsMapping(t, map[string]string{"table.field.event.sequence": "version"}).Resolve("shop.events", eventsTable, mapping.Order{})
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decoder()
	r := row(map[string]string{"event_id": uuid.NewString(), "agg_type": "payment", "agg_id": "p-1", "event_type": "Captured",
		"body": `{"amount": 5}`, "created": "2026-03-04 05:06:07.123456+00", "version": "3"})
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(r, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}); allocs > 2 {
		t.Fatalf("%v allocations per row, want 2", allocs)
	}
}

func TestUndecodableKeepsWhatItCanAndIsStable(t *testing.T) {
	p, err := eventsMapping(t, nil).Resolve("shop.events", eventsTable, mapping.Order{})
	if err != nil {
		t.Fatal(err)
	}
	vals := row(map[string]string{"event_id": "not-a-uuid", "agg_type": "payment", "agg_id": "p-1", "event_type": "Captured", "body": "{}"})
	partial, err := p.Decoder().Decode(vals, time.Time{})
	if err == nil {
		t.Fatal("decoded a row without a valid id")
	}
	a := p.Undecodable("0/16B3748", vals, partial, err)
	b := p.Undecodable("0/16B3748", vals, partial, err)
	if a.ID != b.ID || a.ID == uuid.Nil || a.Key() != (outbox.AggregateKey{Type: "payment", ID: "p-1"}) || a.Type != "Undecodable" {
		t.Fatalf("%+v / %+v", a, b)
	}
	var doc struct {
		Error   string
		Columns map[string]*string
	}
	if err := json.Unmarshal(a.Payload, &doc); err != nil || !strings.Contains(doc.Error, "not a UUID") ||
		doc.Columns["event_id"] == nil || *doc.Columns["event_id"] != "not-a-uuid" || doc.Columns["created"] != nil {
		t.Fatalf("payload %s: %v", a.Payload, err)
	}
	if c := p.Undecodable("0/16B3750", vals, partial, err); c.ID == a.ID {
		t.Fatal("two rows got one id")
	}
}

// Decoding never panics, whatever a row holds, and a row it accepts is a
// publishable message.
func FuzzDecode(f *testing.F) {
	f.Add("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071", "p-1", "2026-03-04 05:06:07.1+05:30", `\x00ff`, "7")
	f.Add("", "", "9999-99-99 99:99:99", `\xzz`, "-1")
	f.Add(string(make([]byte, 16)), "x", "2026-03-04 05:06:07.1234567890+00:00:00:00", "", "9223372036854775808")
	f.Fuzz(func(t *testing.T, id, key, created, blob, version string) {
		p, err := eventsMapping(t, map[string]string{"table.field.event.sequence": "version",
			"table.fields.additional.placement": "blob:envelope,tenant:header"}).Resolve("shop.events", eventsTable, mapping.Order{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := p.Decoder().Decode(row(map[string]string{"event_id": id, "agg_type": "a", "agg_id": key, "event_type": "T",
			"body": "{}", "created": created, "blob": blob, "version": version, "tenant": key}), time.Unix(0, 0))
		if err != nil {
			if !errors.Is(err, mapping.ErrRow) {
				t.Fatalf("error not marked ErrRow: %v", err)
			}
			return
		}
		if m.ID == uuid.Nil || m.AggregateID == "" || m.Sequence < 0 || !json.Valid(m.Payload) {
			t.Fatalf("accepted an unpublishable row: %+v", m)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	p, err := eventsMapping(b, map[string]string{"table.field.event.sequence": "version"}).Resolve("shop.events", eventsTable, mapping.Order{})
	if err != nil {
		b.Fatal(err)
	}
	d := p.Decoder()
	r := row(map[string]string{"event_id": uuid.NewString(), "agg_type": "payment", "agg_id": "p-1", "event_type": "Captured",
		"body": `{"amount": 5}`, "created": "2026-03-04 05:06:07.123456+00", "version": "3"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(r, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}

// A row whose id does not decode still names its aggregate, so its dead
// letter parks that aggregate and its later events wait behind it.
func TestAnUndecodableRowKeepsItsAggregate(t *testing.T) {
	p, err := eventsMapping(t, nil).Resolve("shop.events", eventsTable, mapping.Order{})
	if err != nil {
		t.Fatal(err)
	}
	vals := row(map[string]string{"event_id": "42", "agg_type": "payment", "agg_id": "p-1", "event_type": "T", "body": "{}"})
	partial, err := p.Decoder().Decode(vals, time.Time{})
	dl := p.Undecodable("1:7", vals, partial, err)
	if err == nil || dl.Key() != (outbox.AggregateKey{Type: "payment", ID: "p-1"}) {
		t.Fatalf("dead letter of aggregate %s (%v), want payment/p-1", dl.Key(), err)
	}
	vals = row(map[string]string{"event_id": uuid.NewString(), "agg_type": "payment", "event_type": "T", "body": "{}"})
	partial, err = p.Decoder().Decode(vals, time.Time{})
	if dl := p.Undecodable("1:8", vals, partial, err); err == nil || dl.AggregateType != "outbox.undecodable" || dl.AggregateID != "shop.events@1:8" {
		t.Fatalf("a row without an aggregate id: dead letter of %s (%v)", dl.Key(), err)
	}
}
