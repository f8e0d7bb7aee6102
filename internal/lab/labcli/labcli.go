// Package labcli holds what the lab commands (demo, bench, chaos) share:
// argument checks, JSON output, a progress bar.
package labcli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/outbox-dev/outbox/internal/app"
)

// NoArgs refuses positional arguments with a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return app.Usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// PrintJSON writes v indented.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Progress draws a bar on stderr while the stages run.
type Progress struct {
	label  string // prefixes the lines printed off a terminal
	w      io.Writer
	total  int
	cur    int
	name   string
	mu     sync.Mutex
	last   time.Time
	active bool
}

// NewProgress draws on w, a terminal; elsewhere it prints a line per step.
func NewProgress(w io.Writer, label string, total int) *Progress {
	return &Progress{w: w, label: label, total: total, active: IsTerminal(w)}
}

// Step starts the next step.
func (p *Progress) Step(name string) {
	p.mu.Lock()
	p.cur++
	p.name = name
	p.mu.Unlock()
	if !p.active {
		fmt.Fprintf(p.w, "%s [%d/%d] %s\n", p.label, p.cur, p.total-1, name)
	}
	p.Frac(0)
}

// Frac shows how much of the step is done.
func (p *Progress) Frac(f float64) {
	if !p.active {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && f > 0 {
		return
	}
	p.last = time.Now()
	done := (float64(p.cur-1) + min(max(f, 0), 1)) / float64(p.total-1)
	width := 30
	bar := strings.Repeat("█", int(done*float64(width))) + strings.Repeat("░", width-int(done*float64(width)))
	fmt.Fprintf(p.w, "\r%s %3.0f%%  %-32s", bar, done*100, p.name)
}

// Done clears the bar.
func (p *Progress) Done() {
	if p.active {
		fmt.Fprint(p.w, "\r\x1b[2K")
	}
}
