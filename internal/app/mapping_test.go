package app

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/outbox-dev/outbox/mapping"
)

// relayFlags is the flag set of outbox relay.
func relayFlags(c *Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	c.AddFlags(fs)
	c.AddMappingFlags(fs)
	return fs
}

var wantKeys = map[string]string{
	"table.name":                        "app.events",
	"table.field.event.key":             "user_id",
	"route.topic.replacement":           "users.${routedByValue}",
	"table.fields.additional.placement": "tenant:header,kind:header:eventKind",
	"route.tombstone.on.empty.payload":  "true",
}

// The mapping is set like every other setting: repeated flags, one
// OUTBOX_MAPPING value whose commas separate pairs (a part without "="
// continuing table.fields.additional.placement's own list), or an object
// in the config file; the command line wins, then the environment.
func TestTheMappingComesFromFlagsEnvironmentOrConfigFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "relay.json")
	if err := os.WriteFile(file, []byte(`{"mapping": {"table.name": "app.events", "table.field.event.key": "user_id",
		"route.topic.replacement": "users.${routedByValue}", "table.fields.additional.placement": "tenant:header,kind:header:eventKind",
		"route.tombstone.on.empty.payload": true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{name: "flags", args: []string{"--mapping", "table.name=app.events", "--mapping", "table.field.event.key=user_id",
			"--mapping", "route.topic.replacement=users.${routedByValue}", "--mapping", "table.fields.additional.placement=tenant:header,kind:header:eventKind",
			"--mapping", "route.tombstone.on.empty.payload=true"}},
		{name: "one comma-separated flag", args: []string{"--mapping", "table.name=app.events,table.field.event.key=user_id," +
			"table.fields.additional.placement=tenant:header,kind:header:eventKind,route.topic.replacement=users.${routedByValue},route.tombstone.on.empty.payload=true"}},
		{name: "environment", env: "table.name=app.events,table.fields.additional.placement=tenant:header,kind:header:eventKind," +
			"table.field.event.key=user_id,route.topic.replacement=users.${routedByValue},route.tombstone.on.empty.payload=true"},
		{name: "config file", args: []string{"--config", file}},
		{name: "the command line wins over the environment and the file", env: "table.name=wrong", args: []string{"--config", file,
			"--mapping", "table.name=app.events,table.field.event.key=user_id,route.topic.replacement=users.${routedByValue}",
			"--mapping", "table.fields.additional.placement=tenant:header,kind:header:eventKind", "--mapping", "route.tombstone.on.empty.payload=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("OUTBOX_MAPPING", tc.env)
			}
			var c Config
			fs := relayFlags(&c)
			if err := fs.Parse(append(tc.args, "--store", "sqlite://"+filepath.Join(t.TempDir(), "x.db"))); err != nil {
				t.Fatal(err)
			}
			if err := c.Resolve(fs); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(c.Mapping, wantKeys) {
				t.Fatalf("keys %v, want %v", c.Mapping, wantKeys)
			}
			m := c.TableMapping()
			if m == nil || m.Table != "app.events" || m.EventKey != "user_id" || len(m.Additional) != 2 || !m.TombstoneOnEmptyPayload {
				t.Fatalf("mapping %+v", m)
			}
			if got := c.Topics(); got != "users.{aggregatetype}" {
				t.Fatalf("topic template %q, want route.topic.replacement's users.{aggregatetype}", got)
			}
		})
	}
}

func TestNoMappingReadsOutboxsOwnTable(t *testing.T) {
	var c Config
	fs := relayFlags(&c)
	if err := fs.Parse([]string{"--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db"), "--topic-template", "{type}"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Resolve(fs); err != nil {
		t.Fatal(err)
	}
	if c.TableMapping() != nil || c.Topics() != "{type}" {
		t.Fatalf("mapping %v, topics %q", c.TableMapping(), c.Topics())
	}
}

func TestABadMappingSettingIsAUsageError(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--mapping", "table.name=e,table.field.event.kee=x"}, `unknown key "table.field.event.kee"`},
		{"not key=value", []string{"--mapping", "table.name"}, "not KEY=VALUE"},
		{"topic template and a mapping", []string{"--mapping", "table.name=e", "--topic-template", "{type}"}, "route.topic.replacement"},
		// Refused whenever given, even at its default value: the mapping
		// routes, and a template that seems to apply would mislead.
		{"default topic template given and a mapping", []string{"--mapping", "table.name=e", "--topic-template", "outbox.event.{aggregatetype}"}, "route.topic.replacement"},
		{"topic template from the environment and a mapping", []string{"--mapping", "table.name=e", "env:OUTBOX_TOPIC_TEMPLATE=outbox.event.{aggregatetype}"}, "route.topic.replacement"},
		{"scylla", []string{"--mapping", "table.name=e", "--store", "scylla://127.0.0.1/shop"}, "ScyllaDB"},
		{"unsupported Debezium setting", []string{"--mapping", "table.name=e,route.topic.regex=(.*)"}, "route.topic.regex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			fs := relayFlags(&c)
			var args []string
			for _, a := range tc.args {
				if env, ok := strings.CutPrefix(a, "env:"); ok {
					k, v, _ := strings.Cut(env, "=")
					t.Setenv(k, v)
					continue
				}
				args = append(args, a)
			}
			err := fs.Parse(append([]string{"--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db")}, args...))
			if err == nil {
				err = c.Resolve(fs)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %s", err, tc.want)
			}
			if _, usage := errors.AsType[UsageError](err); !usage && !strings.Contains(tc.name, "key=value") {
				t.Fatalf("%v is not a usage error (exit 2)", err)
			}
			if strings.Contains(tc.name, "unknown") && !errors.Is(err, mapping.ErrInvalid) {
				t.Fatalf("%v does not wrap mapping.ErrInvalid", err)
			}
		})
	}
}

// Each layer (command line, environment, file) gives the whole mapping:
// the first that has one wins and the others' keys are not merged in, so
// what the relay reads is one layer's list as written there.
func TestAMappingLayerReplacesTheOthersAsAWhole(t *testing.T) {
	file := filepath.Join(t.TempDir(), "relay.json")
	if err := os.WriteFile(file, []byte(`{"mapping": {"table.name": "file.events", "table.field.event.key": "from_file"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want map[string]string
	}{
		{"the environment over the file", "table.name=env.events", []string{"--config", file}, map[string]string{"table.name": "env.events"}},
		{"the command line over both", "table.name=env.events,table.field.event.type=from_env",
			[]string{"--config", file, "--mapping", "table.name=flag.events"}, map[string]string{"table.name": "flag.events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OUTBOX_MAPPING", tc.env)
			var c Config
			fs := relayFlags(&c)
			if err := fs.Parse(append(tc.args, "--store", "sqlite://"+filepath.Join(t.TempDir(), "x.db"))); err != nil {
				t.Fatal(err)
			}
			if err := c.Resolve(fs); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(c.Mapping, tc.want) {
				t.Fatalf("keys %v, want only %v", c.Mapping, tc.want)
			}
		})
	}
}

// A bad --mapping says so once, and points to the command's own help.
func TestABadMappingMessageHasOnePrefix(t *testing.T) {
	var c Config
	fs := relayFlags(&c)
	if err := fs.Parse([]string{"--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db"), "--mapping", "table.name=e,table.field.event.kee=x"}); err != nil {
		t.Fatal(err)
	}
	err := c.Resolve(fs)
	if err == nil || !strings.HasPrefix(err.Error(), "--mapping: ") || strings.Contains(err.Error(), "--mapping: mapping:") {
		t.Fatalf("error %q: want one --mapping: prefix", err)
	}
}
