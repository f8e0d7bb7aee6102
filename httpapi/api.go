// Package httpapi is the HTTP API: orders, dead letters, health, status,
// metrics and the OpenAPI document. Errors are RFC 9457 problem JSON;
// input is decoded strictly and bounded; a refused request writes nothing.
package httpapi

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3.1 document served at /openapi.json.
func OpenAPI() []byte { return openapiDoc }

// Orders runs the order commands (order.Service).
type Orders interface {
	Create(ctx context.Context, in order.CreateInput, meta order.Meta) (order.Order, bool, error)
	Get(ctx context.Context, id string) (order.Order, error)
	Update(ctx context.Context, id string, in order.UpdateInput, expected int64, meta order.Meta) (order.Order, error)
	Cancel(ctx context.Context, id string, expected int64, meta order.Meta) (order.Order, error)
}

// DeadLetters is the operator's view of the dead-letter store.
type DeadLetters interface {
	outbox.ActionRequester
	ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error)
	GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error)
	ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error)
}

// Deps are what the API serves. Nil funcs and handlers are treated as
// "nothing to report".
type Deps struct {
	Orders      Orders
	DeadLetters DeadLetters
	// Poke asks the relay to look for new replay/skip requests at once.
	Poke func()
	// Ready returns nil when the service can take traffic.
	Ready func(ctx context.Context) error
	// Status returns the /status document.
	Status func(ctx context.Context) any
	// Metrics serves /metrics.
	Metrics http.Handler
	// AdminToken, when set, is required as a Bearer token on /dlq.
	AdminToken string
	// MaxReplays refuses replays past this many (default 3).
	MaxReplays int
	// MaxOrderRequests bounds the order commands running at once (0: no
	// bound); more wait for a turn until their request ends, then get 503.
	MaxOrderRequests int
	// History returns GET /status/history, the console's charts.
	History func() any
	// ObserveRequest hears each request: its route (the mux pattern, or
	// "unmatched"), status code and duration.
	ObserveRequest func(route string, status int, d time.Duration)
	Logger         *slog.Logger
}

type api struct {
	Deps
	mux *http.ServeMux
	// orderTurns holds one token per order command running, when
	// MaxOrderRequests bounds them.
	orderTurns chan struct{}
}

// New builds the API handler.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{Deps: d, mux: http.NewServeMux()}
	if d.MaxOrderRequests > 0 {
		a.orderTurns = make(chan struct{}, d.MaxOrderRequests)
	}
	if d.Orders != nil { // outbox relay's status server has no orders
		a.mux.HandleFunc("POST /orders", a.orderTurn(a.createOrder))
		a.mux.HandleFunc("GET /orders/{id}", a.orderTurn(a.getOrder))
		a.mux.HandleFunc("PATCH /orders/{id}", a.orderTurn(a.updateOrder))
		a.mux.HandleFunc("POST /orders/{id}/cancel", a.orderTurn(a.cancelOrder))
	}
	a.mux.HandleFunc("GET /dlq", a.admin(a.listDeadLetters))
	a.mux.HandleFunc("GET /dlq/parked", a.admin(a.parkedAggregates))
	a.mux.HandleFunc("GET /dlq/{id}", a.admin(a.getDeadLetter))
	a.mux.HandleFunc("POST /dlq/{id}/replay", a.admin(a.actOnDeadLetter(outbox.ActionReplay)))
	a.mux.HandleFunc("POST /dlq/{id}/skip", a.admin(a.actOnDeadLetter(outbox.ActionSkip)))
	a.mux.HandleFunc("POST /dlq/replay", a.admin(a.replayAll))
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", a.status)
	a.mux.HandleFunc("GET /status/history", a.history)
	a.mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	a.mux.HandleFunc("GET /ui/{file...}", a.console)
	a.mux.HandleFunc("GET /metrics", a.metrics)
	a.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiDoc)
	})
	return a
}

// ServeHTTP adds safe headers, turns the mux's own 404 and 405 into
// problem JSON, and a handler's panic into a logged 500: the server and
// every other request carry on.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &responseStarted{ResponseWriter: w, status: http.StatusOK}
	if a.ObserveRequest != nil {
		start := time.Now()
		defer func() {
			route := "unmatched"
			if _, pattern := a.mux.Handler(r); pattern != "" {
				route = pattern
			}
			a.ObserveRequest(route, rw.status, time.Since(start))
		}()
	}
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
		a.Logger.Error("HTTP handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
		if !rw.started {
			writeProblem(rw, r, problem(http.StatusInternalServerError, "internal", "Internal error",
				"the request failed unexpectedly; it may or may not have been applied (retry with If-Match or Idempotency-Key to be safe)"))
		}
	}()
	a.serve(rw, r)
}

// responseStarted notes whether a handler began its answer, so a panic is
// answered only when nothing was written yet.
type responseStarted struct {
	http.ResponseWriter
	started bool
	status  int
}

func (w *responseStarted) WriteHeader(code int) {
	if !w.started {
		w.status = code
	}
	w.started = true
	w.ResponseWriter.WriteHeader(code)
}
func (w *responseStarted) Write(b []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(b)
}
func (w *responseStarted) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxTurnWait bounds how long an order command waits for a turn; the
// server's WriteTimeout (30 s) does not end a request's context.
const maxTurnWait = 10 * time.Second

// orderTurn runs h when an order command may run: a bounded number run at
// once (they hold database connections and, on SQLite, the one writer),
// and one that waits longer than maxTurnWait, or whose request ends
// first, is answered 503 having done nothing.
func (a *api) orderTurn(h http.HandlerFunc) http.HandlerFunc {
	if a.orderTurns == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.orderTurns <- struct{}{}:
		default:
			t := time.NewTimer(maxTurnWait)
			defer t.Stop()
			select {
			case a.orderTurns <- struct{}{}:
			case <-r.Context().Done():
				a.orderProblem(w, r, fmt.Errorf("%w: waiting for a turn: %w", order.ErrUnavailable, r.Context().Err()))
				return
			case <-t.C:
				a.orderProblem(w, r, fmt.Errorf("%w: no turn within %s", order.ErrUnavailable, maxTurnWait))
				return
			}
		}
		defer func() { <-a.orderTurns }()
		h(w, r)
	}
}

func (a *api) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if _, pattern := a.mux.Handler(r); pattern == "" {
		probe := &statusRecorder{header: http.Header{}}
		a.mux.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeProblem(w, r, problem(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
				r.Method+" is not allowed here; allowed: "+probe.header.Get("Allow")))
			return
		}
		writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Not found", "no such resource"))
		return
	}
	a.mux.ServeHTTP(w, r)
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

// admin requires the bearer token when one is configured, compared in
// constant time.
func (a *api) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.AdminToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.AdminToken)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="outbox-admin"`)
				writeProblem(w, r, problem(http.StatusUnauthorized, "unauthorized", "Unauthorized",
					"dead-letter endpoints need Authorization: Bearer <OUTBOX_ADMIN_TOKEN>"))
				return
			}
		}
		h(w, r)
	}
}

func (a *api) internal(w http.ResponseWriter, r *http.Request, err error) {
	a.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, r, problem(http.StatusInternalServerError, "internal", "Internal error", "the request failed; see the server log"))
}

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.Ready != nil {
		if err := a.Ready(r.Context()); err != nil {
			writeProblem(w, r, problem(http.StatusServiceUnavailable, "not-ready", "Not ready", err.Error()))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	var doc any = map[string]string{}
	if a.Status != nil {
		doc = a.Status(r.Context())
	}
	writeJSON(w, http.StatusOK, doc)
}

func (a *api) metrics(w http.ResponseWriter, r *http.Request) {
	if a.Metrics == nil {
		writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Not found", "metrics are not enabled"))
		return
	}
	a.Metrics.ServeHTTP(w, r)
}

// NewServer wraps h in an http.Server with every timeout and limit set.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}
