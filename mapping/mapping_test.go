package mapping_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/mapping"
)

func TestParse(t *testing.T) {
	debeziumDefaults := mapping.Mapping{
		Table: "public.outbox_events", EventID: "id", EventKey: "aggregateid", EventType: "type", Payload: "payload",
		AggregateType: "aggregatetype", RouteBy: "aggregatetype",
		TopicRegex: "(?<routedByValue>.*)", TopicReplacement: "outbox.event.${routedByValue}",
	}
	for _, tc := range []struct {
		name     string
		keys     map[string]string
		want     mapping.Mapping
		template string
		err      string // a part of the error; empty: no error
		errIs    []error
	}{
		{name: "Debezium's defaults", keys: map[string]string{"table.name": "public.outbox_events"},
			want: debeziumDefaults, template: "outbox.event.{aggregatetype}"},
		{name: "other column names", keys: map[string]string{
			"table.name": "shop.events", "table.field.event.id": "event_id", "table.field.event.key": "agg_id",
			"table.field.event.type": "event_type", "table.field.event.payload": "body", "table.field.event.timestamp": "created",
			"route.by.field": "agg_type", "table.field.event.sequence": "version",
			"table.fields.additional.placement": "event_type:header:eventType, tenant:envelope ,trace:header:traceparent",
			"route.topic.replacement":           "${routedByValue}.events", "route.tombstone.on.empty.payload": "TRUE",
			"table.field.poll.position": "seq", "table.field.poll.txid": "xid",
		}, want: mapping.Mapping{
			Table: "shop.events", EventID: "event_id", EventKey: "agg_id", EventType: "event_type", Payload: "body",
			Timestamp: "created", AggregateType: "agg_type", Sequence: "version", RouteBy: "agg_type",
			TopicRegex: "(?<routedByValue>.*)", TopicReplacement: "${routedByValue}.events", TombstoneOnEmptyPayload: true,
			Additional: []mapping.Additional{{"event_type", mapping.Header, "eventType"}, {"tenant", mapping.Envelope, "tenant"},
				{"trace", mapping.Header, "traceparent"}},
			PollPosition: "seq", PollTxID: "xid",
		}, template: "{aggregatetype}.events"},
		{name: "routed by the event type", keys: map[string]string{"table.name": "t", "route.by.field": "type",
			"table.field.event.aggregatetype": "aggregatetype"}, template: "outbox.event.{type}"},
		{name: "a fixed topic", keys: map[string]string{"table.name": "t", "route.topic.replacement": "all-events"}, template: "all-events"},
		{name: "Debezium's accepted no-ops", keys: map[string]string{"table.name": "t", "table.op.invalid.behavior": "warn",
			"table.json.payload.null.behavior": "optional_bytes", "table.json.payload.empty.array.behavior": "ignore",
			"tracing.span.context.field": "tracingspancontext", "tracing.operation.name": "x", "tracing.with.context.field.only": "false",
			"type": "io.debezium.transforms.outbox.EventRouter", "table.field.additional.missing": "ignore"}},
		{name: "the event type as its own header is redundant, not refused", keys: map[string]string{"table.name": "t",
			"table.fields.additional.placement": "type:header:type"}},

		{name: "no table", keys: map[string]string{}, err: "table.name is required", errIs: []error{mapping.ErrInvalid}},
		{name: "three-part table", keys: map[string]string{"table.name": "a.b.c"}, err: "table or schema.table"},
		{name: "unknown key", keys: map[string]string{"table.name": "t", "table.field.event.kee": "x"}, err: `unknown key "table.field.event.kee"`},
		{name: "Connect prefix", keys: map[string]string{"table.name": "t", "transforms.outbox.route.by.field": "x"}, err: "transforms.<name>."},
		{name: "another transform", keys: map[string]string{"table.name": "t", "type": "org.apache.kafka.connect.transforms.RegexRouter"}, err: `unknown key "type"`},
		{name: "partition placement", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "p:partition"},
			err: "partitioned by their key", errIs: []error{mapping.ErrInvalid, mapping.ErrUnsupported}},
		{name: "unknown placement", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "p:body"}, err: "header or envelope"},
		{name: "placement without one", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "p"}, err: "column:placement"},
		{name: "empty placement entry", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "a:header,,b:header"}, err: "column:placement"},
		{name: "empty alias", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "a:header:"}, err: "empty alias"},
		{name: "header placed twice", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "a:header:x,b:header:x"}, err: `header "x" is placed twice`},
		{name: "envelope payload", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "a:envelope:payload"}, err: "payload's own"},
		{name: "reserved header from another column", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "kind:header:type"},
			err: `header "type" is one outbox sets itself, from column "type"`},
		{name: "sequence header without a sequence column", keys: map[string]string{"table.name": "t", "table.fields.additional.placement": "version:header:sequence"},
			err: "set table.field.event.sequence=version instead"},
		{name: "regex", keys: map[string]string{"table.name": "t", "route.topic.regex": "(?<routedByValue>[a-z]+)"}, err: "only the default",
			errIs: []error{mapping.ErrUnsupported}},
		{name: "illegal topic", keys: map[string]string{"table.name": "t", "route.topic.replacement": "events/${routedByValue}"}, err: "[a-zA-Z0-9._-]"},
		{name: "other group", keys: map[string]string{"table.name": "t", "route.topic.replacement": "x.$1"}, err: "[a-zA-Z0-9._-]"},
		{name: "route by a third column", keys: map[string]string{"table.name": "t", "route.by.field": "region", "table.field.event.aggregatetype": "aggregatetype"},
			err: "must be the aggregate type column"},
		{name: "bad bool", keys: map[string]string{"table.name": "t", "route.tombstone.on.empty.payload": "yes"}, err: "true or false"},
		{name: "invalid operation fatal", keys: map[string]string{"table.name": "t", "table.op.invalid.behavior": "fatal"}, err: "never sees updates",
			errIs: []error{mapping.ErrUnsupported}},
		{name: "schema version", keys: map[string]string{"table.name": "t", "table.field.event.schema.version": "v"}, err: "schema versions",
			errIs: []error{mapping.ErrUnsupported}},
		{name: "missing behaviour", keys: map[string]string{"table.name": "t", "table.field.additional.missing": "skip"}, err: "error or ignore"},
		{name: "comma in a name", keys: map[string]string{"table.name": "t", "table.field.event.id": "a,b"}, err: "','"},
		{name: "long name", keys: map[string]string{"table.name": strings.Repeat("x", 64)}, err: "longer than 63"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := mapping.Parse(tc.keys)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				for _, target := range append(tc.errIs, mapping.ErrInvalid) {
					if !errors.Is(err, target) {
						t.Errorf("error %v is not %v", err, target)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.Table != "" && !reflect.DeepEqual(m, tc.want) {
				t.Errorf("parsed\n %+v\nwant\n %+v", m, tc.want)
			}
			if tc.template != "" && m.TopicTemplate() != tc.template {
				t.Errorf("topic template %q, want %q", m.TopicTemplate(), tc.template)
			}
			again, err := mapping.Parse(m.Keys())
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Errorf("Keys does not parse back: %v\n %+v\n %+v", err, again, m)
			}
		})
	}
}

// Every documented key parses with its documented default, and what the
// defaults make is Debezium's mapping: Options and Parse cannot drift
// apart.
func TestOptionsAreWhatParseReads(t *testing.T) {
	base, err := mapping.Parse(map[string]string{"table.name": "t"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range mapping.Options() {
		if seen[o.Key] {
			t.Errorf("%s listed twice", o.Key)
		}
		seen[o.Key] = true
		if o.Key == mapping.KeyTable || strings.Contains(o.Default, " ") {
			continue // a description, not a value
		}
		m, err := mapping.Parse(map[string]string{"table.name": "t", o.Key: o.Default})
		if err != nil {
			t.Errorf("%s=%q (its default): %v", o.Key, o.Default, err)
			continue
		}
		if !reflect.DeepEqual(m, base) {
			t.Errorf("%s=%q (its default) changes the mapping:\n %+v\n %+v", o.Key, o.Default, m, base)
		}
	}
	for k := range base.Keys() {
		if !seen[k] {
			t.Errorf("Keys renders %s, which Options does not list", k)
		}
	}
}

func TestOutboxIsOutboxsOwnTable(t *testing.T) {
	m := mapping.Outbox()
	if m.Table != "outbox" || m.Sequence != "sequence" || m.Headers != "headers" || m.Timestamp != "timestamp" ||
		m.PollPosition != "position" || m.PollTxID != "txid" || m.TopicTemplate() != "outbox.event.{aggregatetype}" {
		t.Fatalf("%+v", m)
	}
}

// The parser never panics, and whatever it accepts renders to keys that
// parse back to the same mapping.
func FuzzParse(f *testing.F) {
	f.Add("public.outbox", "event_id", "agg_id", "agg_type", "event_type:header:eventType,tenant:envelope", "outbox.event.${routedByValue}", "true")
	f.Add("t", "", "", "", "a:header", "", "")
	f.Add("a.b", "id", "k", "type", "x:partition", "${routedByValue}", "no")
	f.Add("", ",", ":", "\x00", "a:header:,", "$", "TRUE")
	f.Fuzz(func(t *testing.T, table, id, key, routeBy, additional, replacement, tombstone string) {
		keys := map[string]string{
			"table.name": table, "table.field.event.id": id, "table.field.event.key": key, "route.by.field": routeBy,
			"table.fields.additional.placement": additional, "route.topic.replacement": replacement,
			"route.tombstone.on.empty.payload": tombstone,
		}
		m, err := mapping.Parse(keys)
		if err != nil {
			if !errors.Is(err, mapping.ErrInvalid) {
				t.Fatalf("error not marked ErrInvalid: %v", err)
			}
			return
		}
		again, err := mapping.Parse(m.Keys())
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip: %v\n %+v\n %+v", err, again, m)
		}
		if tpl := m.TopicTemplate(); strings.Contains(tpl, "$") {
			t.Fatalf("template %q keeps a replacement variable", tpl)
		}
	})
}
