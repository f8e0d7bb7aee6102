package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"time"
)

// printVersion prints the version and what the build info says of the
// build: the module's version, the commit, its time and whether the tree
// had uncommitted changes, and the Go release.
func printVersion(w io.Writer, version string, info *debug.BuildInfo) {
	if info != nil && version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	fmt.Fprintf(w, "outbox %s\n", version)
	if info == nil {
		return
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	module := info.Main.Path
	if info.Main.Version != "" {
		module += " " + info.Main.Version
	}
	fmt.Fprintf(w, "  module  %s\n", module)
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (with uncommitted changes)"
		}
		fmt.Fprintf(w, "  commit  %s\n", rev)
	} else {
		fmt.Fprintf(w, "  commit  unknown (built outside a git checkout, or with -buildvcs=false)\n")
	}
	if t, err := time.Parse(time.RFC3339, settings["vcs.time"]); err == nil {
		fmt.Fprintf(w, "  time    %s (the commit's)\n", t.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  go      %s\n", info.GoVersion)
}
