package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
)

const maxListLimit = 500

type deadLetterPage struct {
	Items     []outbox.DeadLetter `json:"items"`
	NextAfter *int64              `json:"next_after"`
}

func badParam(name, reason string) *Problem {
	p := problem(http.StatusBadRequest, "validation-error", "Invalid request", name+" "+reason)
	p.Errors = []FieldError{{Field: name, Reason: reason}}
	return p
}

func parseFilter(q url.Values) (outbox.DeadLetterFilter, *Problem) {
	f := outbox.DeadLetterFilter{Limit: 100}
	known := map[string]bool{"aggregate_type": true, "aggregate_id": true, "type": true, "status": true,
		"since": true, "until": true, "after": true, "limit": true}
	for k, v := range q {
		if !known[k] {
			return f, badParam(k, "is not a known parameter")
		}
		if len(v) > 1 {
			return f, badParam(k, "is given more than once")
		}
		if len(v[0]) > 256 || !utf8.ValidString(v[0]) {
			return f, badParam(k, "is too long or not UTF-8")
		}
	}
	at, aid := q.Get("aggregate_type"), q.Get("aggregate_id")
	if (at == "") != (aid == "") {
		return f, badParam("aggregate_id", "and aggregate_type go together")
	}
	if at != "" {
		f.Aggregate = &outbox.AggregateKey{Type: at, ID: aid}
	}
	f.Type = q.Get("type")
	switch s := outbox.DeadLetterStatus(q.Get("status")); s {
	case "", outbox.StatusParked, outbox.StatusReplayed, outbox.StatusSkipped:
		f.Status = s
	default:
		return f, badParam("status", "must be parked, replayed or skipped")
	}
	for _, tp := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(tp.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, badParam(tp.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*tp.dst = t
		}
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return f, badParam("after", "must be a dead-letter id (a non-negative integer)")
		}
		f.AfterID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return f, badParam("limit", fmt.Sprintf("must be between 1 and %d", maxListLimit))
		}
		f.Limit = n
	}
	return f, nil
}

func (a *api) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	f, p := parseFilter(r.URL.Query())
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	items, err := a.DeadLetters.ListDeadLetters(r.Context(), f)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	page := deadLetterPage{Items: items}
	if page.Items == nil {
		page.Items = []outbox.DeadLetter{}
	}
	if len(items) == f.Limit {
		next := items[len(items)-1].ID
		page.NextAfter = &next
	}
	writeJSON(w, http.StatusOK, page)
}

// deadLetter loads the entry named in the path; unknown or malformed ids
// are 404.
func (a *api) deadLetter(w http.ResponseWriter, r *http.Request) (outbox.DeadLetter, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil && id > 0 {
		var dl outbox.DeadLetter
		if dl, err = a.DeadLetters.GetDeadLetter(r.Context(), id); err == nil {
			return dl, true
		}
		if !errors.Is(err, outbox.ErrNotFound) {
			a.internal(w, r, err)
			return dl, false
		}
	}
	writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Dead letter not found", "no dead letter has id "+r.PathValue("id")))
	return outbox.DeadLetter{}, false
}

func (a *api) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	if dl, ok := a.deadLetter(w, r); ok {
		writeJSON(w, http.StatusOK, dl)
	}
}

type actionBody struct {
	Reason string `json:"reason"`
}

// actionRequest reads ?dry_run and the optional {"reason": ...} body.
func actionRequest(w http.ResponseWriter, r *http.Request) (relay.RequestOptions, *Problem) {
	var opts relay.RequestOptions
	for k := range r.URL.Query() {
		if k != "dry_run" {
			return opts, badParam(k, "is not a known parameter")
		}
	}
	if v := r.URL.Query().Get("dry_run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return opts, badParam("dry_run", "must be true or false")
		}
		opts.DryRun = b
	}
	if r.ContentLength != 0 {
		var body actionBody
		if p := decode(w, r, &body); p != nil {
			return opts, p
		}
		if len(body.Reason) > 512 || !utf8.ValidString(body.Reason) {
			return opts, badParam("reason", "must be at most 512 bytes of UTF-8")
		}
		opts.Reason = body.Reason
	}
	return opts, nil
}

func (a *api) actionProblem(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, outbox.ErrNotParked):
		writeProblem(w, r, problem(http.StatusConflict, "not-parked", "Not parked", "that dead letter's aggregate is no longer parked"))
	case errors.Is(err, relay.ErrNotFirst):
		writeProblem(w, r, problem(http.StatusConflict, "not-first", "Not the failed message", err.Error()))
	case errors.Is(err, relay.ErrReplayLimit):
		writeProblem(w, r, problem(http.StatusConflict, "replay-limit", "Replay limit reached", err.Error()))
	default:
		a.internal(w, r, err)
	}
}

func (a *api) actOnDeadLetter(action outbox.Action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		opts, p := actionRequest(w, r)
		if p != nil {
			writeProblem(w, r, p)
			return
		}
		dl, ok := a.deadLetter(w, r)
		if !ok {
			return
		}
		if dl.Status != outbox.StatusParked {
			writeProblem(w, r, problem(http.StatusConflict, "not-parked", "Not parked", fmt.Sprintf("dead letter %d is already %s", dl.ID, dl.Status)))
			return
		}
		opts.MaxReplays, opts.Entry = a.MaxReplays, dl.ID
		plan, err := relay.Request(r.Context(), a.DeadLetters, dl.Message.Key(), action, opts)
		if err != nil {
			a.actionProblem(w, r, err)
			return
		}
		a.accepted(w, plan.DryRun, plan)
	}
}

func (a *api) accepted(w http.ResponseWriter, dryRun bool, body any) {
	if dryRun {
		writeJSON(w, http.StatusOK, body)
		return
	}
	if a.Poke != nil {
		a.Poke()
	}
	writeJSON(w, http.StatusAccepted, body)
}

type refusal struct {
	Aggregate outbox.AggregateKey `json:"aggregate"`
	Reason    string              `json:"reason"`
}

type replayAllResult struct {
	DryRun  bool         `json:"dry_run"`
	Plans   []relay.Plan `json:"plans"`
	Refused []refusal    `json:"refused"`
}

func (a *api) replayAll(w http.ResponseWriter, r *http.Request) {
	opts, p := actionRequest(w, r)
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	opts.MaxReplays = a.MaxReplays
	parked, err := a.DeadLetters.ParkedAggregates(r.Context())
	if err != nil {
		a.internal(w, r, err)
		return
	}
	res := replayAllResult{DryRun: opts.DryRun, Plans: []relay.Plan{}, Refused: []refusal{}}
	for _, pa := range parked {
		plan, err := relay.Request(r.Context(), a.DeadLetters, pa.Key, outbox.ActionReplay, opts)
		switch {
		case err == nil:
			res.Plans = append(res.Plans, plan)
		case errors.Is(err, relay.ErrReplayLimit) || errors.Is(err, outbox.ErrNotParked):
			res.Refused = append(res.Refused, refusal{Aggregate: pa.Key, Reason: err.Error()})
		default:
			a.internal(w, r, err)
			return
		}
	}
	a.accepted(w, opts.DryRun, res)
}
