package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testcert"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(t.TempDir()) // the demo's default store is ./outbox.db
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrorsExit2WithAMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"demo bad orders", []string{"demo", "--orders", "-5"}, "--orders"},
		{"chaos unknown scenario", []string{"chaos", "--scenario", "R99"}, "names no scenario"},
		{"chaos postgres without kafka", []string{"chaos", "--postgres", "postgres://x/y"}, "go together"},
		{"chaos missing binary", []string{"chaos", "--outbox", "/nonexistent/outbox"}, "--outbox"},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"bench stage not a duration", []string{"bench", "--stage-seconds", "ten"}, `invalid argument "ten" for "--stage-seconds" flag: want a positive number of seconds (e.g. 10 or 2.5) or a duration`},
		{"bench stage too short", []string{"bench", "--stage-seconds", "100ms"}, "--stage-seconds must be between 0.5 s and 10 min, got 100ms"},
		{"bench backlog not a list", []string{"bench", "--backlog", "10k"}, `want comma-separated whole numbers`},
		{"bench hot keys beyond events", []string{"bench", "--events", "1000", "--hot-keys", "5000"}, "--hot-keys: each must be between 1 and --events (1000)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

func TestDemoVerdict(t *testing.T) {
	code, out, errs := runCLI(t, "demo", "--orders", "200", "--http", "127.0.0.1:0", "--broker-port", "0")
	if code != 0 || !strings.Contains(out, "verdict: OK: 200 orders, 600 events; lost 0, phantom 0, order 0") {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
}

func TestDemoChaosParksThePoisonAndLosesNothing(t *testing.T) {
	code, out, errs := runCLI(t, "demo", "--orders", "40", "--chaos", "--breaker-open-timeout", "1s", "--http", "127.0.0.1:0", "--broker-port", "0")
	if code != 0 || !strings.Contains(out, "verdict: OK: 40 orders, 120 events; lost 0, phantom 0, order 0") ||
		!strings.Contains(out, "poison event, which is parked") || strings.Contains(out, "breaker opened 0 time") {
		t.Fatalf("demo --chaos: exit %d\n%s\n%s", code, out, errs)
	}
}

// outboxBinary builds the product binary the bench runs as its child
// relay (runCLI moves to a directory outside the module).
func outboxBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outbox")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/outbox-dev/outbox/cmd/outbox").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/outbox: %v\n%s", err, out)
	}
	return bin
}

func TestBenchJSONHasEveryFigure(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "--json", "--events", "300", "--stage-seconds", "0.5", "--writers", "2", "--broker-port", "0",
		"--hot-keys", "300,10,1", "--backlog", "3000", "--rates", "200,1000", "--outbox", outboxBinary(t))
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, errs)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json printed no JSON object: %v\n%s", err, out)
	}
	positive := func(where string, m map[string]any, fields ...string) {
		t.Helper()
		for _, field := range fields {
			if v, ok := m[field].(float64); !ok || v <= 0 {
				t.Errorf("%s%s = %v, want a positive number", where, field, m[field])
			}
		}
	}
	positive("", rep, "drain_ratio", "hotkey_ratio", "e2e_p50_ms", "e2e_p99_ms", "keepup_ratio", "keepup_raw_produce_ratio", "overhead_ratio", "cpu_ratio", "isolation_ratio")
	if _, ok := rep["cpu_ratio_at_rates"].(float64); !ok {
		t.Errorf("cpu_ratio_at_rates missing") // 0 on the in-process broker: its work would be in the baseline
	}
	drain, _ := rep["drain"].(map[string]any)
	positive("drain.", drain, "relay_events_per_sec", "raw_produce_events_per_sec", "raw_source_read_events_per_sec", "limit_events_per_sec", "produce_ratio")
	lim, _ := drain["limit_events_per_sec"].(float64)
	if read, _ := drain["raw_source_read_events_per_sec"].(float64); lim > read {
		t.Errorf("drain limit %v above the raw source read %v: the limit is the slower end", lim, read)
	}
	list := func(name string, n int) []map[string]any {
		t.Helper()
		l, _ := rep[name].([]any)
		if len(l) != n {
			t.Fatalf("%s has %d entries, want %d: %v", name, len(l), n, rep[name])
		}
		out := make([]map[string]any, n)
		for i := range l {
			out[i], _ = l[i].(map[string]any)
		}
		return out
	}
	for i, h := range list("hot_keys", 3) {
		if want := []float64{300, 10, 1}[i]; h["aggregates"] != want {
			t.Errorf("hot_keys[%d].aggregates = %v, want %v", i, h["aggregates"], want)
		}
		positive("hot_keys[].", h, "relay_events_per_sec", "ratio")
	}
	for _, b := range list("backlog", 1) {
		positive("backlog[].", b, "events", "events_per_sec", "peak_rss_mb", "cpu_ms_per_1000")
	}
	for _, l := range list("latency", 2) {
		positive("latency[].", l, "offered_events_per_sec", "achieved_events_per_sec", "samples", "p50_ms", "p99_ms")
		if l["cpu_note"] == nil { // SQLite: the relay runs in the writers' process
			t.Errorf("latency[]: no CPU figures and no cpu_note: %v", l)
		}
	}
	cond, _ := rep["conditions"].(map[string]any)
	for _, field := range []string{"store", "source", "broker", "payload_bytes", "durability", "child_relay", "command"} {
		if cond[field] == nil {
			t.Errorf("conditions.%s missing", field)
		}
	}
}

// The demo prints which store it uses, with the password hidden.
func TestDemoHidesTheStorePassword(t *testing.T) {
	const secret = "s3cret-store-password"
	u, err := url.Parse(testenv.PostgresDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), secret) // the test server trusts local connections
	code, out, errs := runCLI(t, "demo", "--orders", "5", "--source", "poll", "--store", u.String(),
		"--http", "127.0.0.1:0", "--broker-port", "0")
	if code != 0 || strings.Contains(out+errs, secret) || !strings.Contains(out+errs, "xxxxx") {
		t.Fatalf("demo: exit %d, want 0 and the password hidden:\n%s%s", code, out, errs)
	}
}

// The demo's own consumers use the same TLS and SASL settings as the relay.
func TestDemoOverTLSAndSCRAM(t *testing.T) {
	const user, password = "outbox", "s3cret-correct-password"
	pair := testcert.New(t)
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Opts: []kfake.Opt{
		kfake.TLS(pair.Server), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, password)}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Setenv("OUTBOX_KAFKA_SASL_PASSWORD", password)
	code, out, errs := runCLI(t, "demo", "--orders", "20", "--http", "127.0.0.1:0",
		"--brokers", b.Addrs()[0], "--kafka-ca-file", pair.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-user", user, "--topic-template", "sec.{aggregatetype}")
	if code != 0 || !strings.Contains(out, "verdict: OK: 20 orders, 60 events") {
		t.Fatalf("demo against the secured broker: exit %d\n%s\n%s", code, out, errs)
	}
	if strings.Contains(out+errs, password) {
		t.Fatal("the password appears in the demo's output")
	}
}
