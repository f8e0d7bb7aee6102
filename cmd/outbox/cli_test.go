package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrorsExit2WithAMessage(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.json")
	os.WriteFile(badConfig, []byte(`{"colour": "red"}`), 0o600)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"serve", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"bad duration", nil, []string{"relay", "--poll-interval", "soon"}, "poll-interval"},
		{"negative duration", nil, []string{"relay", "--poll-interval", "-1s"}, "--poll-interval must be positive"},
		{"negative linger", nil, []string{"relay", "--kafka-linger", "-5ms"}, "--kafka-linger must be between 0 and 100ms, got -5ms"},
		{"linger past 100ms", nil, []string{"relay", "--kafka-linger", "2s"}, "--kafka-linger must be between 0 and 100ms, got 2s"},
		{"bad env", map[string]string{"OUTBOX_LOG_LEVEL": "loud"}, []string{"relay"}, "--log-level"},
		{"bad env type", map[string]string{"OUTBOX_BROKER_PORT": "ninety"}, []string{"relay"}, "OUTBOX_BROKER_PORT"},
		{"unknown config key", nil, []string{"relay", "--config", badConfig}, `unknown setting "colour"`},
		{"missing config", nil, []string{"relay", "--config", filepath.Join(dir, "none.json")}, "config file"},
		{"scylla bad keyspace", nil, []string{"relay", "--store", "scylla://db/Bad-Name"}, "must be a lower-case identifier"},
		{"scylla bad option", nil, []string{"serve", "--store", "scylla://db/shop?rf=zero"}, "rf must be 1 to 9"},
		{"scylla with poll", nil, []string{"relay", "--source", "poll", "--store", "scylla://127.0.0.1:1/shop"}, "ScyllaDB is read through CDC"},
		{"bad source", nil, []string{"relay", "--source", "tail"}, "--source must be cdc or poll"},
		{"sqlite with cdc", nil, []string{"relay", "--source", "cdc", "--brokers", "127.0.0.1:1", "--store", "sqlite://" + filepath.Join(dir, "y.db")}, "SQLite is read by polling"},
		{"store without scheme", nil, []string{"relay", "--store", "outbox.db"}, "must be a URL"},
		{"open listen without token", nil, []string{"serve", "--http", "0.0.0.0:8080", "--store", "sqlite://" + filepath.Join(dir, "x.db")}, "OUTBOX_ADMIN_TOKEN"},
		{"relay open listen without token", map[string]string{"OUTBOX_ADMIN_TOKEN": ""}, []string{"relay", "--http", "0.0.0.0:8081", "--brokers", "127.0.0.1:1",
			"--store", "sqlite://" + filepath.Join(dir, "r.db")}, "--http 0.0.0.0:8081 listens beyond loopback: set OUTBOX_ADMIN_TOKEN"},
		{"args to serve", nil, []string{"serve", "extra"}, "takes no arguments"},
		{"dlq show without id", nil, []string{"dlq", "show"}, "one dead-letter ID"},
		{"dlq show bad id", nil, []string{"dlq", "show", "x"}, "positive integer"},
		{"kafka tls without brokers", nil, []string{"relay", "--kafka-tls"}, "need --brokers"},
		{"kafka plain without tls", map[string]string{"OUTBOX_KAFKA_SASL_PASSWORD": "pw"}, []string{"relay", "--brokers", "k:9092", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-user", "u"}, "clear text"},
		{"kafka bad ca", nil, []string{"relay", "--brokers", "k:9092", "--kafka-ca-file", "/nonexistent.pem"}, "CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, _, stderr := runCLI(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

func TestFlagBeatsEnvBeatsConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "outbox.json")
	os.WriteFile(file, []byte(`{"store": "sqlite://`+filepath.Join(dir, "from-file.db")+`"}`), 0o600)
	code, out, errs := runCLI(t, "migrate", "--config", file)
	if code != 0 || !strings.Contains(out, "from-file.db") {
		t.Fatalf("config file: exit %d %q %q", code, out, errs)
	}
	t.Setenv("OUTBOX_STORE", "sqlite://"+filepath.Join(dir, "from-env.db"))
	if _, out, _ := runCLI(t, "migrate", "--config", file); !strings.Contains(out, "from-env.db") {
		t.Fatalf("environment must beat the config file: %q", out)
	}
	if _, out, _ := runCLI(t, "migrate", "--config", file, "--store", "sqlite://"+filepath.Join(dir, "from-flag.db")); !strings.Contains(out, "from-flag.db") {
		t.Fatalf("flag must beat the environment: %q", out)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	code, out, _ := runCLI(t, "serve", "--help")
	if code != 0 {
		t.Fatal(code)
	}
	for _, flag := range []string{"--store", "--brokers", "--http", "--broker-port", "--topic-template", "--poll-interval", "--breaker-open-timeout", "--order-concurrency", "--config", "--log-level"} {
		if !strings.Contains(out, flag) {
			t.Errorf("serve --help does not document %s", flag)
		}
	}
}

func TestDLQCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Migrate(ctx)
	now := time.Now().UTC()
	for i := range 2 {
		m, _ := outbox.NewMessage("order", "o7", "OrderUpdated", int64(i+1), map[string]int{"i": i})
		if _, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	store := "--store=sqlite://" + path

	code, out, _ := runCLI(t, "dlq", "list", store)
	if code != 0 || !strings.Contains(out, "order/o7") || !strings.Contains(out, "MESSAGE_TOO_LARGE") || strings.Count(out, "parked") != 2 {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, out, _ = runCLI(t, "dlq", "show", "1", store); code != 0 || !strings.Contains(out, `"aggregateid": "o7"`) {
		t.Fatalf("show: %d %s", code, out)
	}
	if code, _, errs := runCLI(t, "dlq", "show", "99", store); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}
	if code, out, _ = runCLI(t, "dlq", "replay", "2", "--dry-run", store); code != 0 || !strings.Contains(out, "republish 2 in order (dry run") {
		t.Fatalf("replay dry run: %d %s", code, out)
	}
	if code, _, errs := runCLI(t, "dlq", "skip", "2", store); code != 1 || !strings.Contains(errs, "first parked message (1)") {
		t.Fatalf("skip of a message parked behind another: %d %s", code, errs)
	}
	if code, out, _ = runCLI(t, "dlq", "skip", "1", "--reason", "poison", store); code != 0 || !strings.Contains(out, "skip 1, republish 1") {
		t.Fatalf("skip: %d %s", code, out)
	}
	if code, out, _ = runCLI(t, "dlq", "list", "--json", "--status", "parked", store); code != 0 || !strings.Contains(out, `"status": "parked"`) {
		t.Fatalf("list json: %d %s", code, out)
	}
	if code, _, errs := runCLI(t, "dlq", "list", "--store=sqlite://"+filepath.Join(t.TempDir(), "missing.db")); code != 2 || !strings.Contains(errs, "migrate") {
		t.Fatalf("list on a missing store: %d %s", code, errs)
	}
}

// outbox demo, bench and chaos (with or without their flags) say that
// they are in outbox-lab and how to run it, not just "unknown command".
func TestLabCommandsOnTheProductBinaryPointToOutboxLab(t *testing.T) {
	for _, args := range [][]string{{"demo"}, {"demo", "--orders", "50"}, {"bench", "--quick"}, {"chaos"}} {
		code, out, errs := runCLI(t, args...)
		for _, want := range []string{args[0] + " is not a command of outbox", "in the lab binary, outbox-lab",
			"go run ./cmd/outbox-lab " + args[0], "bin/outbox-lab " + args[0]} {
			if code != 2 || out != "" || !strings.Contains(errs, want) {
				t.Errorf("outbox %v: exit %d, stderr %q; want 2 and %q", args, code, errs, want)
			}
		}
	}
}

// The settings that turn features off or bound them resolve from a flag,
// the environment and the config file like every other, and a config
// built in code keeps the flags' defaults where it matters (topics are
// auto-created).
func TestEdgeSettingsResolve(t *testing.T) {
	resolve := func(env map[string]string, args ...string) (app.Config, error) {
		for k, v := range env {
			t.Setenv(k, v)
		}
		var cfg app.Config
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		cfg.AddFlags(cmd.Flags())
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			return cfg, err
		}
		return cfg, cfg.Resolve(cmd.Flags())
	}
	cfg, err := resolve(nil)
	if err != nil || cfg.NoAutoCreate || cfg.StuckTimeout != 5*time.Minute || cfg.IdempotencyTTL != 24*time.Hour || cfg.KafkaLinger != 0 {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	if cfg, _ := resolve(nil, "--kafka-auto-create-topics=false", "--stuck-timeout", "-1s"); !cfg.NoAutoCreate || cfg.StuckTimeout >= 0 {
		t.Fatalf("flags: NoAutoCreate %v StuckTimeout %s", cfg.NoAutoCreate, cfg.StuckTimeout)
	}
	if cfg, _ := resolve(map[string]string{"OUTBOX_KAFKA_AUTO_CREATE_TOPICS": "false", "OUTBOX_IDEMPOTENCY_TTL": "2h", "OUTBOX_KAFKA_LINGER": "5ms"}); !cfg.NoAutoCreate || cfg.IdempotencyTTL != 2*time.Hour || cfg.KafkaLinger != 5*time.Millisecond {
		t.Fatalf("environment: NoAutoCreate %v IdempotencyTTL %s KafkaLinger %s", cfg.NoAutoCreate, cfg.IdempotencyTTL, cfg.KafkaLinger)
	}
	if cfg, err := resolve(nil, "--kafka-linger", "100ms"); err != nil || cfg.KafkaLinger != 100*time.Millisecond {
		t.Fatalf("--kafka-linger 100ms: KafkaLinger %s, %v", cfg.KafkaLinger, err)
	}
	for _, bad := range [][]string{{"--stuck-timeout", "0s"}, {"--stuck-timeout", "10ms"}, {"--idempotency-ttl", "30s"}, {"--kafka-linger", "-1ms"}, {"--kafka-linger", "101ms"}} {
		if _, err := resolve(nil, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if (app.Config{}).NoAutoCreate {
		t.Fatal("a config built in code must auto-create topics")
	}
}
