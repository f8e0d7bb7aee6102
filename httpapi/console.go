package httpapi

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/outbox-dev/outbox/outbox"
)

// The web console: plain HTML, CSS and JavaScript embedded in the binary,
// served at /ui/. It reads the JSON API (/status, /status/history, /dlq)
// and acts through it, so it holds no logic of its own and follows the
// API's rules: /dlq needs the admin token when one is set, which the
// console asks for once and keeps in the tab's sessionStorage.
//
//go:embed ui
var uiFiles embed.FS

// ConsoleFS is the console's files (index.html, console.js, console.css).
func ConsoleFS() fs.FS {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err)
	}
	return sub
}

// consoleCSP allows nothing but this origin: no CDN, no inline script.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (a *api) console(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.PathValue("file"), "/")
	if name == "" {
		name = "index.html"
	}
	b, err := fs.ReadFile(ConsoleFS(), path.Clean(name))
	if err != nil {
		writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Not found", "no such console file"))
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Security-Policy", consoleCSP)
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Write(b)
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	var doc any = map[string]any{"samples": []any{}, "breaker_transitions": []any{}}
	if a.History != nil {
		doc = a.History()
	}
	writeJSON(w, http.StatusOK, doc)
}

// parkedAggregates lists the parked aggregates, each with its dead
// letters still parked (the failed one first, then those waiting behind
// it), for the console.
func (a *api) parkedAggregates(w http.ResponseWriter, r *http.Request) {
	parked, err := a.DeadLetters.ParkedAggregates(r.Context())
	if err != nil {
		a.internal(w, r, err)
		return
	}
	type entry struct {
		Aggregate any     `json:"aggregate"`
		Parked    any     `json:"parked"`
		Events    []event `json:"events"`
	}
	out := struct {
		Items []entry `json:"items"`
	}{Items: []entry{}}
	for _, p := range parked {
		e := entry{Aggregate: p.Key, Parked: p, Events: []event{}}
		key := p.Key
		dls, err := a.DeadLetters.ListDeadLetters(r.Context(), parkedFilter(&key))
		if err != nil {
			a.internal(w, r, err)
			return
		}
		for _, d := range dls {
			e.Events = append(e.Events, event{ID: d.ID, EventID: d.Message.ID.String(), Type: d.Message.Type,
				Sequence: d.Message.Sequence, Error: d.Error, ParkedBehind: d.ParkedBehind})
		}
		out.Items = append(out.Items, e)
	}
	writeJSON(w, http.StatusOK, out)
}

// event is a parked dead letter in short, without its payload.
type event struct {
	ID           int64  `json:"id"`
	EventID      string `json:"event_id"`
	Type         string `json:"type"`
	Sequence     int64  `json:"sequence"`
	Error        string `json:"error,omitempty"`
	ParkedBehind string `json:"parked_behind,omitempty"`
}

func parkedFilter(key *outbox.AggregateKey) outbox.DeadLetterFilter {
	return outbox.DeadLetterFilter{Aggregate: key, Status: outbox.StatusParked, Limit: maxListLimit}
}
