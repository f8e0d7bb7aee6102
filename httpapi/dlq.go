package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
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

// checkParams refuses a parameter not in known, one given twice, and one
// too long or not UTF-8.
func checkParams(q url.Values, known ...string) *Problem {
	for k, v := range q {
		if !slices.Contains(known, k) {
			return badParam(k, "is not a known parameter")
		}
		if len(v) > 1 {
			return badParam(k, "is given more than once")
		}
		if len(v[0]) > 256 || !utf8.ValidString(v[0]) {
			return badParam(k, "is too long or not UTF-8")
		}
	}
	return nil
}

// intParam is q's name as an integer in [lo, hi], or def when absent.
func intParam(q url.Values, name string, def, lo, hi int) (int, *Problem) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return def, badParam(name, fmt.Sprintf("must be between %d and %d", lo, hi))
	}
	return n, nil
}

func parseFilter(q url.Values) (outbox.DeadLetterFilter, *Problem) {
	f := outbox.DeadLetterFilter{Limit: 100}
	if p := checkParams(q, "aggregate_type", "aggregate_id", "type", "status", "since", "until", "after", "limit", "payload"); p != nil {
		return f, p
	}
	if v := q.Get("payload"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, badParam("payload", "must be true or false")
		}
		f.OmitPayload = !b
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
	var p *Problem
	f.Limit, p = intParam(q, "limit", 100, 1, maxListLimit)
	return f, p
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
	if f.OmitPayload { // a store that read them anyway
		for i := range items {
			items[i] = items[i].WithoutPayload()
		}
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
	notFound(w, r)
	return outbox.DeadLetter{}, false
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Dead letter not found", "no dead letter has id "+r.PathValue("id")))
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
func actionRequest(w http.ResponseWriter, r *http.Request) (dlq.RequestOptions, *Problem) {
	var opts dlq.RequestOptions
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
	case errors.Is(err, outbox.ErrNotFound):
		notFound(w, r)
	case errors.Is(err, dlq.ErrResolved):
		writeProblem(w, r, problem(http.StatusConflict, "not-parked", "Not parked", strings.TrimPrefix(err.Error(), "dlq: ")))
	case errors.Is(err, outbox.ErrNotParked):
		writeProblem(w, r, problem(http.StatusConflict, "not-parked", "Not parked", "that dead letter's aggregate is no longer parked"))
	case errors.Is(err, dlq.ErrNotFirst):
		writeProblem(w, r, problem(http.StatusConflict, "not-first", "Not the failed message", strings.TrimPrefix(err.Error(), "dlq: ")))
	case errors.Is(err, dlq.ErrReplayLimit):
		writeProblem(w, r, problem(http.StatusConflict, "replay-limit", "Replay limit reached", strings.TrimPrefix(err.Error(), "dlq: ")))
	default:
		a.internal(w, r, err)
	}
}

func (a *api) ops() dlq.Ops {
	return dlq.Ops{Store: a.DeadLetters, MaxReplays: a.MaxReplays, Poke: a.Poke}
}

func (a *api) actOnDeadLetter(action outbox.Action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		opts, p := actionRequest(w, r)
		if p != nil {
			writeProblem(w, r, p)
			return
		}
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id < 1 {
			notFound(w, r)
			return
		}
		plan, err := a.ops().Act(r.Context(), id, action, opts)
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
	writeJSON(w, http.StatusAccepted, body)
}

func (a *api) replayAll(w http.ResponseWriter, r *http.Request) {
	opts, p := actionRequest(w, r)
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	res, err := a.ops().ReplayAll(r.Context(), opts)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	a.accepted(w, opts.DryRun, res)
}
