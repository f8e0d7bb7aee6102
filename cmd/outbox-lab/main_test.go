package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
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

func TestBenchJSONHasEveryFigure(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "--json", "--events", "300", "--stage-seconds", "0.5s", "--writers", "2", "--broker-port", "0")
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, errs)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json printed no JSON object: %v\n%s", err, out)
	}
	for _, field := range []string{"drain_ratio", "e2e_p50_ms", "e2e_p99_ms", "keepup_ratio", "overhead_ratio", "cpu_ratio", "isolation_ratio"} {
		v, ok := rep[field].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", field, rep[field])
		}
	}
	cond, _ := rep["conditions"].(map[string]any)
	for _, field := range []string{"store", "source", "broker", "payload_bytes", "durability"} {
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
