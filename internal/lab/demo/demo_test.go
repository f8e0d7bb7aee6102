package demo

import (
	"os"
	"path/filepath"
	"testing"
)

// The demo's dead-letter hint names the outbox binary beside outbox-lab
// (bin/outbox after the README's build), else go run from the repository.
func TestTheHintNamesTheOutboxBinaryBesideTheLab(t *testing.T) {
	repo := t.TempDir()
	bin := filepath.Join(repo, "bin")
	os.Mkdir(bin, 0o755)
	lab := filepath.Join(bin, "outbox-lab")
	os.WriteFile(lab, []byte("#!/bin/sh\n"), 0o755)
	if got := outboxCommand(lab, repo); got != "go run ./cmd/outbox" {
		t.Errorf("no outbox beside outbox-lab: %q, want go run ./cmd/outbox", got)
	}
	os.WriteFile(filepath.Join(bin, "outbox"), []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct{ wd, want string }{
		{repo, "bin/outbox"},
		{bin, "./outbox"},
		{t.TempDir(), filepath.Join(bin, "outbox")},
	} {
		if got := outboxCommand(lab, tc.wd); got != tc.want {
			t.Errorf("from %s: %q, want %q", tc.wd, got, tc.want)
		}
	}
	// go run's outbox-lab sits in a build cache directory, alone.
	if got := outboxCommand(filepath.Join(t.TempDir(), "exe", "outbox-lab"), repo); got != "go run ./cmd/outbox" {
		t.Errorf("under go run: %q", got)
	}
}
