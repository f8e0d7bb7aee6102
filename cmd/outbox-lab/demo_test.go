package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
)

// storeLine finds the demo's store URL in its first line.
var storeLine = regexp.MustCompile(`store (sqlite://\S+)`)

// `outbox-lab demo --chaos` without --orders runs until it is stopped: it
// says so, says once how to look at the dead letter (and that CLI command
// lists it), and when stopped (main's signal context ending, as on
// Ctrl-C) it checks what was written and prints a verdict.
func TestDemoChaosWithoutOrdersShowsTheDeadLetterAndEndsWithAVerdict(t *testing.T) {
	outboxBin := outboxBinary(t)
	t.Chdir(t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errs testenv.CappedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--chaos", "--breaker-open-timeout", "1s", "--http", "127.0.0.1:0", "--broker-port", "0"}, &out, &errs)
	}()
	testenv.Eventually(t, 90*time.Second, "the hint on the dead letter", func() bool {
		select {
		case code := <-done:
			t.Fatalf("demo ended by itself (exit %d) before it was stopped:\n%s\n%s", code, out.String(), errs.String())
		default:
		}
		return strings.Contains(out.String(), "with the CLI:")
	})
	o := out.String()
	for _, want := range []string{"runs until Ctrl-C", "/ui/#dlq", "outbox dlq list --store sqlite://", "The demo goes on until Ctrl-C"} {
		if !strings.Contains(o, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, o)
		}
	}
	// The command it gives lists the poison event.
	m := storeLine.FindStringSubmatch(o)
	if m == nil {
		t.Fatalf("no store in the demo's output:\n%s", o)
	}
	list, err := exec.Command(outboxBin, "dlq", "list", "--store", m[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "poison-1") {
		t.Errorf("outbox dlq list --store %s: %v\n%s", m[1], err, list)
	}

	cancel() // what Ctrl-C does to main's context
	var code int
	select {
	case code = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the demo did not stop within 2 minutes of its signal:\n%s", out.String())
	}
	o = out.String()
	if code != 0 || !strings.Contains(o, "verdict: OK (stopped): ") || !strings.Contains(o, "nothing dead-lettered but the poison event, which is parked") {
		t.Fatalf("stopped demo: exit %d, want 0 and a verdict:\n%s\n%s", code, o, errs.String())
	}
	if n := strings.Count(o, "Look at it"); n != 1 {
		t.Errorf("the hint on the dead letter is printed %d times, want once:\n%s", n, o)
	}
}

// labBinary builds outbox-lab, to run it as a child process.
func labBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outbox-lab")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/outbox-dev/outbox/cmd/outbox-lab").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/outbox-lab: %v\n%s", err, out)
	}
	return bin
}

// A demo stopped by SIGTERM or SIGINT prints its verdict and leaves no
// temporary directory behind (its store's and its consumers' inbox).
func TestDemoRemovesItsTemporaryDirectoriesWhenStopped(t *testing.T) {
	bin := labBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command(bin, "demo", "--http", "127.0.0.1:0", "--broker-port", "0")
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var errs testenv.CappedBuffer
			cmd.Stderr = &errs
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			var all []string
			next := func() string {
				t.Helper()
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("the demo's output ended:\n%s\n%s", strings.Join(all, "\n"), errs.String())
					}
					all = append(all, l)
					return l
				case <-time.After(time.Minute):
					t.Fatalf("no output from the demo for a minute:\n%s\n%s", strings.Join(all, "\n"), errs.String())
				}
				return ""
			}
			m := storeLine.FindStringSubmatch(next())
			if m == nil {
				t.Fatalf("no store in the demo's first line: %q", all)
			}
			dir := filepath.Dir(strings.TrimPrefix(m[1], "sqlite://"))
			if filepath.Dir(dir) != tmp {
				t.Fatalf("the demo's store %s is not in its TMPDIR %s", m[1], tmp)
			}
			for !strings.HasPrefix(next(), "orders ") { // the live view: it is running
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for l := ""; !strings.HasPrefix(l, "verdict: "); {
				l = next()
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("the demo after %s: %v\n%s\n%s", sig, err, strings.Join(all, "\n"), errs.String())
			}
			if v := all[len(all)-1]; !strings.HasPrefix(v, "verdict: OK (stopped): ") {
				t.Errorf("verdict after %s: %q", sig, v)
			}
			left, err := os.ReadDir(tmp)
			if err != nil || len(left) != 0 {
				t.Errorf("after %s the demo left %v in its TMPDIR (%v)", sig, left, err)
			}
		})
	}
}
