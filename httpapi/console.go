package httpapi

import (
	"context"
	"embed"
	"io/fs"
	"math"
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
	if p := checkParams(r.URL.Query()); p != nil { // it takes none
		writeProblem(w, r, p)
		return
	}
	var doc any = map[string]any{"samples": []any{}, "breaker_transitions": []any{}}
	if a.History != nil {
		doc = a.History()
	}
	writeJSON(w, http.StatusOK, doc)
}

// parkedEventLister lists several aggregates' parked events, the first
// perAggregate of each, without payloads, in one query (store/sqlite,
// store/postgres). Without it the page's aggregates are read one by one.
type parkedEventLister interface {
	ParkedEvents(ctx context.Context, keys []outbox.AggregateKey, perAggregate int) ([]outbox.DeadLetter, error)
}

const (
	defaultParkedLimit  = 50
	defaultParkedEvents = 20
)

// parkedAggregates lists the parked aggregates, a page at a time (limit,
// offset; next_offset), each with its first parked dead letters (the
// failed one first, then those waiting behind it; events, default 20)
// without payloads, for the console. parked.parked_events counts them all.
func (a *api) parkedAggregates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := checkParams(q, "limit", "offset", "events")
	var limit, offset, perAggregate int
	if p == nil {
		limit, p = intParam(q, "limit", defaultParkedLimit, 1, maxListLimit)
	}
	if p == nil {
		offset, p = intParam(q, "offset", 0, 0, math.MaxInt32)
	}
	if p == nil {
		perAggregate, p = intParam(q, "events", defaultParkedEvents, 1, maxListLimit)
	}
	if p != nil {
		writeProblem(w, r, p)
		return
	}
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
		Items      []entry `json:"items"`
		NextOffset *int    `json:"next_offset"`
	}{Items: []entry{}}
	page := parked[min(offset, len(parked)):min(offset+limit, len(parked))]
	if offset+len(page) < len(parked) {
		next := offset + len(page)
		out.NextOffset = &next
	}
	keys := make([]outbox.AggregateKey, len(page))
	for i, pa := range page {
		keys[i] = pa.Key
	}
	var dls []outbox.DeadLetter
	if l, ok := a.DeadLetters.(parkedEventLister); ok {
		if dls, err = l.ParkedEvents(r.Context(), keys, perAggregate); err != nil {
			a.internal(w, r, err)
			return
		}
	} else {
		for _, key := range keys {
			some, err := a.DeadLetters.ListDeadLetters(r.Context(), outbox.DeadLetterFilter{Aggregate: &key,
				Status: outbox.StatusParked, Limit: perAggregate, OmitPayload: true})
			if err != nil {
				a.internal(w, r, err)
				return
			}
			dls = append(dls, some...)
		}
	}
	events := map[outbox.AggregateKey][]event{}
	for _, d := range dls {
		d = d.WithoutPayload()
		events[d.Message.Key()] = append(events[d.Message.Key()], event{ID: d.ID, EventID: d.Message.ID.String(), Type: d.Message.Type,
			Sequence: d.Message.Sequence, Error: d.Error, ParkedBehind: d.ParkedBehind, PayloadSize: d.PayloadSize})
	}
	for _, pa := range page {
		e := entry{Aggregate: pa.Key, Parked: pa, Events: events[pa.Key]}
		if e.Events == nil {
			e.Events = []event{}
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
	PayloadSize  int    `json:"payload_size"`
}
