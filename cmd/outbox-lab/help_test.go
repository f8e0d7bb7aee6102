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

// outbox-lab demo --help is golden (go test ./cmd/outbox-lab -run TestHelp
// -update-help rewrites it), and it shows no --store default the demo
// does not use: the demo's store is a temporary SQLite database.
func TestHelpOfDemoIsGoldenWithNoStoreDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"demo", "--help"}, &out, &out); code != 0 {
		t.Fatalf("demo --help: exit %d: %s", code, out.String())
	}
	got := out.String()
	path := filepath.Join("testdata", "help", "demo.golden")
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
		t.Errorf("outbox-lab demo --help:\n%s\nwant (%s):\n%s", got, path, want)
	}
	var store string
	for _, line := range strings.Split(got, "\n") {
		if strings.Contains(line, "--store ") {
			store = line
		}
	}
	if store == "" {
		t.Fatalf("demo --help has no --store line:\n%s", got)
	}
	if strings.Contains(store, `(default "`) || strings.Contains(store, "outbox.db") ||
		!strings.Contains(store, "(default: a SQLite database in a new temporary directory") {
		t.Errorf("demo --help's --store shows a default the demo does not use: %s", store)
	}
}
