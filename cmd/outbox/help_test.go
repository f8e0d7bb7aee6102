package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateHelp = flag.Bool("update-help", false, "rewrite testdata/help/*.golden")

func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if code := run(context.Background(), append(args, "--help"), &out, &out); code != 0 {
		t.Fatalf("%v --help: exit %d: %s", args, code, out.String())
	}
	return out.String()
}

// Each command lists the flags it uses and no others (golden files:
// go test ./cmd/outbox -run TestHelp -update-help rewrites them).
func TestHelpOfEachCommandIsGolden(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"relay"}, {"migrate"}, {"dlq", "list"}, {"dlq", "show"}, {"dlq", "replay"}, {"dlq", "skip"}, {"version"}, {"broker"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			got := helpOf(t, args...)
			path := filepath.Join("testdata", "help", strings.Join(args, "_")+".golden")
			if *updateHelp {
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("outbox %s --help:\n%s\nwant (%s):\n%s", strings.Join(args, " "), got, path, want)
			}
		})
	}
}

// migrate and dlq do not list the relay's and Kafka's settings; serve does.
func TestHelpShowsOnlyTheFlagsACommandUses(t *testing.T) {
	relayOnly := []string{"--brokers", "--kafka-tls", "--kafka-sasl-mechanism", "--breaker-open-timeout", "--retention",
		"--poll-interval", "--max-in-flight", "--stuck-timeout", "--topic-template", "--broker-port", "--idempotency-ttl", "--kafka-linger"}
	for _, args := range [][]string{{"migrate"}, {"dlq", "list"}, {"dlq", "replay"}} {
		help := helpOf(t, args...)
		if !strings.Contains(help, "--store") {
			t.Errorf("outbox %v --help has no --store:\n%s", args, help)
		}
		for _, f := range relayOnly {
			if strings.Contains(help, f+" ") {
				t.Errorf("outbox %v --help lists %s, which it does not use", args, f)
			}
		}
	}
	serve := helpOf(t, "serve")
	for _, f := range relayOnly {
		if !strings.Contains(serve, f+" ") {
			t.Errorf("outbox serve --help lacks %s", f)
		}
	}
	// relay publishes to --brokers only: no embedded broker's port.
	relay := helpOf(t, "relay")
	for _, f := range relayOnly {
		if shown := strings.Contains(relay, f+" "); shown != (f != "--broker-port") {
			t.Errorf("outbox relay --help: %s shown %v", f, shown)
		}
	}
	// Hidden is not refused: one config file or environment serves all.
	var out bytes.Buffer
	if code := run(context.Background(), []string{"dlq", "list", "--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db"),
		"--brokers", "k:9092"}, &out, &out); code == 0 || strings.Contains(out.String(), "unknown flag") {
		t.Errorf("dlq list refused --brokers (or opened a store that is not there): %s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"relay", "--broker-port", "0"}, &out, &out); code != 2 ||
		strings.Contains(out.String(), "unknown flag") || !strings.Contains(out.String(), "--brokers") {
		t.Errorf("relay --broker-port 0 without --brokers: exit %d, want 2 asking for --brokers: %s", code, out.String())
	}
}
