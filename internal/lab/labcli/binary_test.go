package labcli

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The scenarios run the product binary: the one named, else the one on
// PATH (nothing sits beside a test binary), else one built from source.
func TestTheLabFindsTheProductBinary(t *testing.T) {
	dir := t.TempDir()
	onPath := filepath.Join(dir, "outbox")
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	got, cleanup, err := OutboxBinary(t.Context(), "", "test", io.Discard)
	cleanup()
	if err != nil || got != onPath {
		t.Fatalf("got %q, %v; want the one on PATH, %s", got, err, onPath)
	}
	named := filepath.Join(t.TempDir(), "my-outbox")
	os.WriteFile(named, nil, 0o755)
	if got, _, err := OutboxBinary(t.Context(), named, "test", io.Discard); err != nil || got != named {
		t.Fatalf("got %q, %v; want the named one", got, err)
	}
}
