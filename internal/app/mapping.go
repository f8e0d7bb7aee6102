package app

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/store/postgres"
)

// AddMappingFlags registers --mapping, the Debezium EventRouter keys that
// point the relay at a table of the user's (package mapping), for relay
// and migrate.
func (c *Config) AddMappingFlags(fs *pflag.FlagSet) {
	fs.Var(mappingFlag{&c.Mapping}, "mapping", "read a table of your own: Debezium EventRouter keys, KEY=VALUE, repeatable or comma-separated "+
		"(table.name=public.outbox,table.field.event.key=aggregate_id,route.topic.replacement=events.${routedByValue}); "+
		"in the config file an object {\"table.name\": ...}")
}

// mappingFlag collects KEY=VALUE pairs into a map. One value may hold
// several pairs separated by commas (OUTBOX_MAPPING); a part without "="
// continues the previous value, so table.fields.additional.placement's
// own comma-separated list needs no escaping.
type mappingFlag struct{ m *map[string]string }

func (f mappingFlag) String() string {
	if f.m == nil || len(*f.m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(*f.m))
	for _, k := range slices.Sorted(maps.Keys(*f.m)) {
		parts = append(parts, k+"="+(*f.m)[k])
	}
	return strings.Join(parts, ",")
}

func (f mappingFlag) Set(s string) error {
	if *f.m == nil {
		*f.m = map[string]string{}
	}
	last := ""
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if last == "" {
				return fmt.Errorf("%q is not KEY=VALUE", strings.TrimSpace(part))
			}
			(*f.m)[last] += "," + part
			continue
		}
		k = strings.TrimSpace(k)
		if k == "" {
			return fmt.Errorf("%q has no key", part)
		}
		(*f.m)[k], last = v, k
	}
	return nil
}

func (mappingFlag) Type() string { return "KEY=VALUE" }

// setObject takes the config file's "mapping" object.
func (f mappingFlag) setObject(obj map[string]any) error {
	if *f.m == nil {
		*f.m = map[string]string{}
	}
	for k, v := range obj {
		switch v.(type) {
		case string, bool, float64:
			(*f.m)[k] = fmt.Sprint(v)
		default:
			return fmt.Errorf("%s: a string, number or boolean, not %T", k, v)
		}
	}
	return nil
}

// parseMapping builds the table mapping, when one is configured.
func (c *Config) parseMapping(store StoreURL) (*mapping.Mapping, string, error) {
	if len(c.Mapping) == 0 {
		return nil, "", nil
	}
	rendered := mappingFlag{&c.Mapping}.String()
	if store.Kind == Scylla {
		return nil, "", Usagef("--mapping reads a table of PostgreSQL or SQLite; ScyllaDB's relay reads outbox's own")
	}
	// Refused whenever given (flag, environment or file), even at its
	// default: the mapping routes, and a template that seems to apply
	// would mislead.
	if c.topicTemplateSet || (c.TopicTemplate != "" && c.TopicTemplate != defaultTopicTemplate) {
		return nil, "", Usagef("--topic-template %q with --mapping: the mapping routes by %s and %s", c.TopicTemplate, mapping.KeyRouteBy, mapping.KeyTopicReplacement)
	}
	m, err := mapping.Parse(c.Mapping)
	if err != nil {
		// mapping's errors start "mapping: "; one prefix is enough.
		return nil, "", UsageError{Err: prefixed{"--mapping: " + strings.TrimPrefix(err.Error(), "mapping: "), err}}
	}
	return &m, rendered, nil
}

// PollSetupSQL is what outbox migrate applies to make a mapped
// PostgreSQL table pollable (postgres.PollSetupSQL), for migrate
// --print-sql: it needs a mapping, a PostgreSQL store and --source poll,
// and connects to nothing.
func PollSetupSQL(cfg Config) (string, error) {
	if err := cfg.validated(); err != nil {
		return "", err
	}
	if cfg.mapping == nil || cfg.store.Kind != Postgres || cfg.source != "poll" {
		return "", Usagef("--print-sql prints the statements that make a table of yours pollable on PostgreSQL: " +
			"give --mapping, a postgres:// --store and --source poll (CDC and SQLite need none)")
	}
	ddl, err := postgres.PollSetupSQL(*cfg.mapping)
	if err != nil {
		return "", mappingError(err)
	}
	return ddl, nil
}

// prefixed is err with another message (errors.Is still sees err).
type prefixed struct {
	msg string
	err error
}

func (p prefixed) Error() string { return p.msg }
func (p prefixed) Unwrap() error { return p.err }

// TableMapping is the parsed --mapping (after Validate), nil without one:
// the relay reads outbox's own table.
func (c *Config) TableMapping() *mapping.Mapping { return c.mapping }

// Topics is the publisher's topic template: --topic-template, or with a
// mapping its route.topic.replacement.
func (c *Config) Topics() string {
	if c.mapping != nil {
		return c.mapping.TopicTemplate()
	}
	return c.TopicTemplate
}
