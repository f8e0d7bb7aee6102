package labcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/outbox-dev/outbox/internal/app"
)

// OutboxBinary finds the product binary a lab command runs as child
// processes (it tests that binary, not this one): given (--outbox), else
// the outbox beside this binary, else the one on PATH, else one built
// from the source tree with go build, which cleanup removes. label names
// the command in what it logs and returns.
func OutboxBinary(ctx context.Context, given, label string, log io.Writer) (path string, cleanup func(), err error) {
	nothing := func() {}
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", nothing, app.Usagef("--outbox %s: %v", given, err)
		}
		return given, nothing, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "outbox")
		if st, err := os.Stat(beside); err == nil && !st.IsDir() {
			return beside, nothing, nil
		}
	}
	if p, err := exec.LookPath("outbox"); err == nil {
		return p, nothing, nil
	}
	dir, err := os.MkdirTemp("", "outbox-"+label+"-bin-")
	if err != nil {
		return "", nothing, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	bin := filepath.Join(dir, "outbox")
	fmt.Fprintf(log, "%s: no outbox binary beside this one or on PATH; building it (go build ./cmd/outbox)\n", label)
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/outbox-dev/outbox/cmd/outbox").CombinedOutput(); err != nil {
		cleanup()
		return "", nothing, fmt.Errorf("%s: build the outbox binary (or pass --outbox): %w\n%s", label, err, out)
	}
	return bin, cleanup, nil
}
