package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/outbox"
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

// maxShownPayload is how much of a payload dlq show prints without --full.
const maxShownPayload = 2048

// truncatedPayload is d with its payload cut to maxShownPayload bytes, as
// a JSON string that says how much is left out.
func truncatedPayload(d outbox.DeadLetter) any {
	b, _ := json.Marshal(d)
	var doc map[string]any
	json.Unmarshal(b, &doc)
	if m, ok := doc["message"].(map[string]any); ok {
		p := d.Message.Payload
		cut := maxShownPayload
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		m["payload"] = fmt.Sprintf("%s… (%d of %d bytes shown; --full prints all)", p[:cut], cut, len(p))
	}
	return doc
}
