// Package httpapi is the HTTP API: orders, dead letters, health, status,
// metrics and the OpenAPI document. Errors are RFC 9457 problem JSON;
// input is decoded strictly and bounded; a refused request writes nothing.
package httpapi

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3.1 document served at /openapi.json.
func OpenAPI() []byte { return openapiDoc }

// Orders runs the order commands (order.Mailbox or order.Service).
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
	Logger     *slog.Logger
}

type api struct {
	Deps
	mux *http.ServeMux
}

// New builds the API handler.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{Deps: d, mux: http.NewServeMux()}
	a.mux.HandleFunc("POST /orders", a.createOrder)
	a.mux.HandleFunc("GET /orders/{id}", a.getOrder)
	a.mux.HandleFunc("PATCH /orders/{id}", a.updateOrder)
	a.mux.HandleFunc("POST /orders/{id}/cancel", a.cancelOrder)
	a.mux.HandleFunc("GET /dlq", a.admin(a.listDeadLetters))
	a.mux.HandleFunc("GET /dlq/{id}", a.admin(a.getDeadLetter))
	a.mux.HandleFunc("POST /dlq/{id}/replay", a.admin(a.actOnDeadLetter(outbox.ActionReplay)))
	a.mux.HandleFunc("POST /dlq/{id}/skip", a.admin(a.actOnDeadLetter(outbox.ActionSkip)))
	a.mux.HandleFunc("POST /dlq/replay", a.admin(a.replayAll))
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", a.status)
	a.mux.HandleFunc("GET /metrics", a.metrics)
	a.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiDoc)
	})
	return a
}

// ServeHTTP adds safe headers and turns the mux's own 404 and 405 into
// problem JSON.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
