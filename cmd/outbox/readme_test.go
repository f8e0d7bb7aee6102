package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestREADMEConfigurationTableMatchesTheFlags keeps README's configuration
// table true: every row names a flag serve or relay has, with its
// environment variable and its real default, and every flag of serve has
// a row.
func TestREADMEConfigurationTableMatchesTheFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	root := newRootCmd(io.Discard, io.Discard)
	flags := map[string]*pflag.Flag{}
	for _, name := range []string{"serve", "relay"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) { flags[f.Name] = f })
	}
	code := regexp.MustCompile("`([^`]*)`")
	documented := map[string]bool{}
	for line := range strings.Lines(string(readme)) {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		m := strings.Split(line, "|")
		if len(m) < 5 {
			t.Fatalf("README: a configuration row with fewer than four cells: %s", line)
		}
		m[3] = strings.TrimSpace(m[3])
		names := code.FindAllStringSubmatch(m[1], -1)
		envs := code.FindAllStringSubmatch(m[2], -1)
		for i, n := range names {
			name := strings.TrimPrefix(n[1], "--")
			documented[name] = true
			f := flags[name]
			if f == nil {
				t.Errorf("README documents --%s, which neither serve nor relay has", name)
				continue
			}
			wantEnv := "OUTBOX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			if i < len(envs) && envs[i][1] != "..." && envs[i][1] != wantEnv {
				t.Errorf("README: --%s reads %s, not %s", name, wantEnv, envs[i][1])
			}
			defaults := code.FindAllStringSubmatch(m[3], -1)
			switch {
			case len(names) > 1 && len(defaults) != len(names):
				// One default for several flags, or none: said in words.
			case m[3] == "empty" || m[3] == "":
				if f.DefValue != "" && f.DefValue != "[]" {
					t.Errorf("README: --%s defaults to nothing; the flag's default is %q", name, f.DefValue)
				}
			case len(defaults) == 1 && len(names) == 1 && m[3] == defaults[0][0]:
				sameDefault(t, name, defaults[0][1], f)
			case len(defaults) == len(names) && len(names) > 1:
				sameDefault(t, name, defaults[i][1], f)
			}
		}
	}
	cmd, _, _ := root.Find([]string{"serve"})
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && !documented[f.Name] && f.Name != "help" {
			t.Errorf("serve --%s has no row in README's configuration table", f.Name)
		}
	})
}

func sameDefault(t *testing.T, name, documented string, f *pflag.Flag) {
	t.Helper()
	if f.Value.Type() == "duration" {
		d, err := time.ParseDuration(documented)
		if err != nil || d.String() != f.DefValue {
			t.Errorf("README: --%s defaults to %q; the flag's default is %s", name, documented, f.DefValue)
		}
		return
	}
	if documented != f.DefValue {
		t.Errorf("README: --%s defaults to %q; the flag's default is %q", name, documented, f.DefValue)
	}
}
