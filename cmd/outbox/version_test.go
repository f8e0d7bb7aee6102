package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/outbox"
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

// dlq show cuts a large payload unless --full.
func TestDLQShowTruncatesALargePayload(t *testing.T) {
	big := `{"blob":"` + strings.Repeat("x", 10000) + `"}`
	d := outbox.DeadLetter{ID: 1, Message: outbox.Message{Payload: json.RawMessage(big)}}
	var out bytes.Buffer
	printJSON(&out, truncatedPayload(d))
	if s := out.String(); len(s) > 4000 || !strings.Contains(s, "(2048 of 10011 bytes shown; --full prints all)") {
		t.Errorf("truncated: %d bytes: %.300s", len(s), s)
	}
}
