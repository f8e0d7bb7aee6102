package app

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/mapping"
)

// config is every setting. Each is a flag, an OUTBOX_* variable and a key
// of the optional JSON config file, in that order of precedence.
type Config struct {
	Store         string
	Source        string
	Slot          string
	RecreateSlot  bool
	Retention     time.Duration
	Brokers       string
	HTTP          string
	BrokerPort    int
	TopicTemplate string
	// NoAutoCreate is --kafka-auto-create-topics=false; inverted so that
	// a config built in code creates topics, as the flag's default does.
	NoAutoCreate   bool
	PollInterval   time.Duration
	BreakerTimeout time.Duration
	StuckTimeout   time.Duration
	MaxInFlight    int
	IdempotencyTTL time.Duration
	OrderWorkers   int
	LogLevel       string
	LogFormat      string
	ConfigFile     string
	// Secrets come from the environment (or *_FILE) only, never a flag:
	// flags show in ps and shell history.
	AdminToken        string
	AlertWebhook      string
	KafkaSASLPassword string
	ScyllaPassword    string

	KafkaTLS      bool
	KafkaCAFile   string
	KafkaCertFile string
	KafkaKeyFile  string
	KafkaSASL     string
	KafkaSASLUser string
	// KafkaLinger is how long the producer waits to fill a request before
	// sending it (kafka.Config.Linger).
	KafkaLinger time.Duration

	// Mapping is --mapping: Debezium EventRouter keys naming a table of
	// the user's for the relay to read (package mapping); empty reads
	// outbox's own table.
	Mapping map[string]string
	// OutboxOnly is migrate's --outbox-only: the outbox's tables, no
	// orders table. outbox relay migrates only those too (New sets
	// relayOnly): it never creates the order service's tables.
	OutboxOnly bool
	relayOnly  bool
	// migrating is outbox migrate (Migrate): on PostgreSQL polling of a
	// mapped table it applies postgres.PollSetupSQL first.
	migrating bool
	// topicTemplateSet: --topic-template was given (flag, environment or
	// file), which a mapping refuses even at its default value.
	topicTemplateSet bool

	// Built by Validate, once; parsedFrom is what they were built from,
	// so a copy of a Config given another Store is parsed again rather
	// than opening the original's store.
	kafka      kafka.Security
	store      StoreURL
	source     string // cdc or poll, the store's default filled in
	mapping    *mapping.Mapping
	parsedFrom parseInputs
}

// parseInputs are the settings parse reads.
type parseInputs struct {
	store, source, brokers                          string
	tls                                             bool
	caFile, certFile, keyFile, sasl, user, password string
	mapping, topics                                 string
}

func (c *Config) parseInputs() parseInputs {
	return parseInputs{c.Store, c.Source, c.Brokers, c.KafkaTLS, c.KafkaCAFile, c.KafkaCertFile, c.KafkaKeyFile,
		c.KafkaSASL, c.KafkaSASLUser, c.KafkaSASLPassword, mappingFlag{&c.Mapping}.String(), c.TopicTemplate}
}

// StoreURL is the parsed --store (after Validate).
func (c *Config) StoreURL() StoreURL { return c.store }

// SourceKind is how the relay captures events, cdc or poll, the store's
// default filled in (after Validate).
func (c *Config) SourceKind() string { return c.source }

// KafkaSecurity is the brokers' TLS and SASL (after Validate).
func (c *Config) KafkaSecurity() kafka.Security { return c.kafka }

// validated parses c unless Validate or New did already.
func (c *Config) validated() error {
	if c.store.Kind != "" && c.parsedFrom == c.parseInputs() {
		return nil
	}
	return c.parse()
}

// AddFlags registers the settings every long-running command shares.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Store, "store", "sqlite://outbox.db", "store URL: sqlite://PATH, postgres://user@host:port/db?sslmode=verify-full or scylla://host,host/keyspace")
	fs.StringVar(&c.Source, "source", "", "how the relay captures events: cdc (PostgreSQL logical replication, its default) or poll")
	fs.StringVar(&c.Slot, "slot", "outbox_relay", "PostgreSQL replication slot of the cdc source")
	fs.BoolVar(&c.RecreateSlot, "recreate-slot", false, "recreate a missing or lost replication slot; events committed while it was gone are NOT delivered")
	fs.DurationVar(&c.Retention, "retention", 24*time.Hour, "PostgreSQL: delete acknowledged outbox rows older than this (0 keeps them)")
	fs.StringVar(&c.Brokers, "brokers", "", "Kafka brokers host:port,...; empty runs the embedded broker")
	fs.BoolVar(&c.KafkaTLS, "kafka-tls", false, "TLS to the brokers, verifying their certificates and host names")
	fs.StringVar(&c.KafkaCAFile, "kafka-ca-file", "", "PEM CA to verify the brokers with (implies --kafka-tls; default: system roots)")
	fs.StringVar(&c.KafkaCertFile, "kafka-cert-file", "", "PEM client certificate for mutual TLS (with --kafka-key-file)")
	fs.StringVar(&c.KafkaKeyFile, "kafka-key-file", "", "PEM client key for mutual TLS")
	fs.StringVar(&c.KafkaSASL, "kafka-sasl-mechanism", "", "SASL mechanism: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (TLS only); the password comes from OUTBOX_KAFKA_SASL_PASSWORD or _FILE")
	fs.StringVar(&c.KafkaSASLUser, "kafka-sasl-user", "", "SASL user")
	fs.DurationVar(&c.KafkaLinger, "kafka-linger", 0, "how long the producer waits to fill a request before sending it (at most 100ms): fewer, larger requests, less CPU per event, each event that much later, and a backlog drains at most --max-in-flight events per linger; 0 sends at once")
	fs.IntVar(&c.BrokerPort, "broker-port", 9092, "port of the embedded broker on 127.0.0.1 (0: any free port)")
	fs.StringVar(&c.TopicTemplate, "topic-template", defaultTopicTemplate, "topic routing: {aggregatetype} and {type} are replaced; {type} is the design's topic per event type")
	f := fs.VarPF(inverted{&c.NoAutoCreate}, "kafka-auto-create-topics", "", "let the broker create a missing topic on first publish; off, an event for a missing topic fails (and is parked after --stuck-timeout)")
	f.NoOptDefVal, f.DefValue = "true", "true"
	fs.DurationVar(&c.PollInterval, "poll-interval", 100*time.Millisecond, "how often the relay polls an idle outbox")
	fs.DurationVar(&c.BreakerTimeout, "breaker-open-timeout", 30*time.Second, "how long the circuit breaker stays open before probing the broker")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 1024, "records read and not yet acknowledged or dead-lettered, at most: the read-ahead, and what a crash may publish twice")
	fs.DurationVar(&c.StuckTimeout, "stuck-timeout", 5*time.Minute, "park an aggregate whose event fails transiently this long while others are published (-1s: never)")
	fs.DurationVar(&c.IdempotencyTTL, "idempotency-ttl", 24*time.Hour, "how long an Idempotency-Key replays its order; a retry after it creates a new order")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.ConfigFile, "config", "", "JSON file whose keys are flag names, e.g. {\"store\": \"sqlite://x.db\"}")
}

const defaultTopicTemplate = kafka.TopicPerAggregateType

// maxLinger bounds --kafka-linger: every event waits it out, and the
// relay holds at most --max-in-flight events unacknowledged, so a backlog
// drains at most that many per linger (10,240 events/s at 100 ms with the
// default 1,024).
const maxLinger = 100 * time.Millisecond

// inverted is a bool flag that sets its field to the opposite value.
type inverted struct{ v *bool }

func (i inverted) String() string {
	if i.v == nil {
		return "true"
	}
	return strconv.FormatBool(!*i.v)
}

func (i inverted) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*i.v = !b
	return nil
}

func (inverted) Type() string { return "bool" }

// AddHTTPFlags registers the API's settings.
func (c *Config) AddHTTPFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "HTTP listen address; beyond loopback it needs OUTBOX_ADMIN_TOKEN")
	fs.IntVar(&c.OrderWorkers, "order-concurrency", 4, "order commands run at once; more wait for a turn (up to 10s, then 503)")
}

// Resolve fills flags not given on the command line from OUTBOX_*
// variables, then from the config file, reads secrets from the
// environment, and validates the result.
func (c *Config) Resolve(fs *pflag.FlagSet) error {
	fileValues := map[string]any{}
	path := c.ConfigFile
	if !fs.Changed("config") {
		path = os.Getenv("OUTBOX_CONFIG")
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return Usagef("config file: %v", err)
		}
		dec := json.NewDecoder(io.LimitReader(f, 1<<20))
		err = dec.Decode(&fileValues)
		f.Close()
		if err != nil {
			return Usagef("config file %s: %v", path, err)
		}
		for k := range fileValues {
			if fs.Lookup(k) == nil || k == "config" {
				return Usagef("config file %s: unknown setting %q", path, k)
			}
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		env := "OUTBOX_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = Usagef("%s=%q: %v", env, v, serr)
			}
			return
		}
		if v, ok := fileValues[f.Name]; ok {
			if obj, isObj := v.(map[string]any); isObj {
				if mf, ok := f.Value.(mappingFlag); ok {
					if serr := mf.setObject(obj); serr != nil {
						err = Usagef("config file %s: %s: %v", path, f.Name, serr)
					}
					return
				}
			}
			if serr := fs.Set(f.Name, fmt.Sprint(v)); serr != nil {
				err = Usagef("config file %s: %s: %v", path, f.Name, serr)
			}
		}
	})
	if err != nil {
		return err
	}
	c.topicTemplateSet = fs.Changed("topic-template")
	if c.AdminToken, err = secret("OUTBOX_ADMIN_TOKEN"); err != nil {
		return err
	}
	if c.AlertWebhook, err = secret("OUTBOX_ALERT_WEBHOOK_URL"); err != nil {
		return err
	}
	if c.KafkaSASLPassword, err = secret("OUTBOX_KAFKA_SASL_PASSWORD"); err != nil {
		return err
	}
	if c.ScyllaPassword, err = secret("OUTBOX_SCYLLA_PASSWORD"); err != nil {
		return err
	}
	return c.Validate()
}

// secret reads NAME, or the file named by NAME_FILE.
func secret(name string) (string, error) {
	if path := os.Getenv(name + "_FILE"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", Usagef("%s_FILE: %v", name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv(name), nil
}

// Validate checks every setting and parses the store URL, once; the
// commands exit 2 on its error.
func (c *Config) Validate() error {
	switch {
	case c.BrokerPort < 0 || c.BrokerPort > 65535:
		return Usagef("--broker-port %d is out of range", c.BrokerPort)
	case c.PollInterval <= 0:
		return Usagef("--poll-interval must be positive, got %s", c.PollInterval)
	case c.BreakerTimeout <= 0:
		return Usagef("--breaker-open-timeout must be positive, got %s", c.BreakerTimeout)
	case c.MaxInFlight < 0 || c.MaxInFlight > 1<<20:
		return Usagef("--max-in-flight must be between 1 and 1048576, got %d", c.MaxInFlight)
	case c.OrderWorkers < 0 || c.OrderWorkers > 256:
		return Usagef("--order-concurrency must be between 1 and 256, got %d", c.OrderWorkers)
	case c.KafkaLinger < 0 || c.KafkaLinger > maxLinger:
		return Usagef("--kafka-linger must be between 0 and %s, got %s", maxLinger, c.KafkaLinger)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return Usagef("--log-level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return Usagef("--log-format must be text or json, got %q", c.LogFormat)
	}
	if c.Retention < 0 {
		return Usagef("--retention must not be negative, got %s", c.Retention)
	}
	if c.StuckTimeout == 0 || (c.StuckTimeout > 0 && c.StuckTimeout < time.Second) {
		return Usagef("--stuck-timeout must be at least 1s (or negative: never park), got %s", c.StuckTimeout)
	}
	if c.IdempotencyTTL < time.Minute {
		return Usagef("--idempotency-ttl must be at least 1m, got %s", c.IdempotencyTTL)
	}
	return c.parse()
}

// parse builds the typed settings (the store URL, the source, Kafka's
// TLS and SASL) once. A Config built in code gets only this, from New:
// its zero values mean the packages' defaults, not a flag set to zero.
func (c *Config) parse() error {
	store, err := ParseStoreURL(c.Store)
	if err != nil {
		return err
	}
	source := c.Source
	switch {
	case source != "" && source != "cdc" && source != "poll":
		return Usagef("--source must be cdc or poll, got %q", c.Source)
	case source == "" && store.Kind == SQLite:
		source = "poll"
	case source == "":
		source = "cdc"
	case store.Kind == SQLite && source != "poll":
		return Usagef("--source %s: SQLite is read by polling; use --source poll", source)
	case store.Kind == Scylla && source == "poll":
		return Usagef("--source poll: ScyllaDB is read through CDC; use --source cdc")
	}
	if c.kafka, err = c.kafkaSecurity(); err != nil {
		return err
	}
	mp, _, err := c.parseMapping(store)
	if err != nil {
		return err
	}
	if c.Brokers == "" && (c.KafkaTLS || c.KafkaCAFile != "" || c.KafkaCertFile != "" || c.KafkaSASL != "") {
		return Usagef("Kafka TLS and SASL settings need --brokers (the embedded broker is plaintext on loopback)")
	}
	c.store, c.source, c.mapping, c.parsedFrom = store, source, mp, c.parseInputs()
	return nil
}

// kafkaSecurity builds the brokers' TLS and SASL settings.
func (c *Config) kafkaSecurity() (kafka.Security, error) {
	sec := kafka.Security{SASLMechanism: strings.ToUpper(c.KafkaSASL), SASLUser: c.KafkaSASLUser, SASLPassword: c.KafkaSASLPassword}
	if c.KafkaTLS || c.KafkaCAFile != "" || c.KafkaCertFile != "" {
		tlsCfg, err := kafka.TLSConfig(c.KafkaCAFile, c.KafkaCertFile, c.KafkaKeyFile, "")
		if err != nil {
			return sec, UsageError{Err: err}
		}
		sec.TLS = tlsCfg
	}
	if _, err := sec.Opts(); err != nil {
		return sec, UsageError{Err: err}
	}
	return sec, nil
}

// BrokerList is --brokers split.
func (c *Config) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
