package main

import (
	"slices"

	"github.com/spf13/pflag"

	"github.com/outbox-dev/outbox/internal/app"
)

// showOnly hides, in fs, the shared settings (app.Config.AddFlags) a
// command does not use, so its --help lists only what matters to it. They
// are still accepted, so one config file or environment serves every
// command.
func showOnly(fs *pflag.FlagSet, keep ...string) {
	shared := pflag.NewFlagSet("shared", pflag.ContinueOnError)
	new(app.Config).AddFlags(shared)
	shared.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(keep, f.Name) && fs.Lookup(f.Name) != nil {
			fs.MarkHidden(f.Name)
		}
	})
}
