package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

func TestVersionShowsModuleCommitAndTime(t *testing.T) {
	var out bytes.Buffer
	printVersion(&out, "dev", &debug.BuildInfo{GoVersion: "go1.26.8",
		Main: debug.Module{Path: "github.com/outbox-dev/outbox", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-11-30T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}})
	want := `outbox v1.4.0
  module  github.com/outbox-dev/outbox v1.4.0
  commit  0123abcd (with uncommitted changes)
  time    2026-11-30T10:00:00Z (the commit's)
  go      go1.26.8
`
	if out.String() != want {
		t.Errorf("version:\n%s\nwant:\n%s", out.String(), want)
	}
	// The command itself, in a test binary (no VCS stamp).
	out.Reset()
	if code := run(context.Background(), []string{"version"}, &out, &out); code != 0 ||
		!strings.HasPrefix(out.String(), "outbox ") || !strings.Contains(out.String(), "  go      go1.") {
		t.Errorf("outbox version: %d %s", code, out.String())
	}
}

// dlq show cuts a large payload unless --full, and never under --json
// (machine output keeps the payload as it is); dlq list --json
// --payload=false leaves payloads out and gives their sizes.
func TestDLQShowTruncatesALargePayloadButNotItsJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Migrate(ctx)
	m, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]string{"blob": strings.Repeat("é", 5000)})
	now := time.Now()
	if _, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	store := "--store=sqlite://" + path
	size := len(m.Payload) // 10,011 bytes

	code, out, errs := runCLI(t, "dlq", "show", "1", store)
	// Cut at 2 KiB, on a character's boundary (é is two bytes).
	if code != 0 || len(out) > 4000 || !utf8.ValidString(out) || !strings.Contains(out, fmt.Sprintf("(2047 of %d bytes shown; --full prints all)", size)) {
		t.Fatalf("dlq show: exit %d, %d bytes: %.400s %s", code, len(out), out, errs)
	}
	payloadOf := func(what, out string) json.RawMessage {
		t.Helper()
		var d outbox.DeadLetter
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("%s: not a dead letter's JSON: %v: %.300s", what, err, out)
		}
		return compact(t, d.Message.Payload)
	}
	for _, args := range [][]string{{"--full"}, {"--json"}} {
		code, out, errs := runCLI(t, append([]string{"dlq", "show", "1", store}, args...)...)
		if p := payloadOf(strings.Join(args, " "), out); code != 0 || !bytes.Equal(p, m.Payload) { // printed indented
			t.Errorf("dlq show %s: exit %d, payload of %d bytes, want the whole %d as it is %s", args, code, len(p), size, errs)
		}
	}
	var page []outbox.DeadLetter
	code, out, _ = runCLI(t, "dlq", "list", "--json", store)
	if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || len(page) != 1 || !bytes.Equal(compact(t, page[0].Message.Payload), m.Payload) {
		t.Fatalf("dlq list --json: exit %d %v %.300s", code, err, out)
	}
	code, out, _ = runCLI(t, "dlq", "list", "--json", "--payload=false", store)
	if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || len(page) != 1 || string(page[0].Message.Payload) != "null" || page[0].PayloadSize != size {
		t.Fatalf("dlq list --json --payload=false: exit %d %v %.300s", code, err, out)
	}
}

func compact(t *testing.T, p json.RawMessage) json.RawMessage {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		t.Fatalf("payload %.100s: %v", p, err)
	}
	return b.Bytes()
}
