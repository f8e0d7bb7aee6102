// Package supervise is the design's Actor Supervision Tree on suture v4.
//
// The root supervisor is the coordinator: it owns every worker's
// lifecycle and the bounded graceful shutdown. Policies map as follows:
//   - Restart (relay, store workers such as the ScyllaDB sweeper): a panic or error ends the worker's
//     Serve; the coordinator starts it again (the relay from its
//     checkpoint). Only the worker that failed is restarted.
//   - Resume (health checker, dead-letter worker): the worker handles a
//     failed step itself, logs it and carries on; only a panic escaping
//     its loop restarts it.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/outbox-dev/outbox/outbox"
)

// Config tunes the tree. Its zero value works.
type Config struct {
	// ShutdownTimeout bounds each worker's stop (default 10 s).
	ShutdownTimeout time.Duration
	// RestartBackoff is the pause after repeated failures (default 1 s).
	RestartBackoff time.Duration
	// OnRestart hears every restart, by worker name.
	OnRestart func(worker string)
	Logger    *slog.Logger
}

// Tree is the coordinator and its workers.
type Tree struct {
	root *suture.Supervisor
	cfg  Config

	mu       sync.Mutex
	restarts map[string]int64
}

// New builds an empty tree.
func New(cfg Config) *Tree {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tree{cfg: cfg, restarts: map[string]int64{}}
	t.root = suture.New("coordinator", suture.Spec{
		EventHook:        t.event,
		Timeout:          cfg.ShutdownTimeout,
		FailureThreshold: 10,
		FailureDecay:     30,
		FailureBackoff:   cfg.RestartBackoff,
	})
	return t
}

type named struct {
	name string
	svc  suture.Service
}

// Serve runs the worker. An error marked outbox.Fatal (a lost replication
// slot, say) ends the whole tree, with that error as Tree.Serve's result:
// restarting cannot cure it, and a process that keeps restarting hides it.
func (n named) Serve(ctx context.Context) error {
	err := n.svc.Serve(ctx)
	if err != nil && ctx.Err() == nil && outbox.IsFatal(err) {
		return terminate{err}
	}
	return err
}

// terminate is what suture recognises as the end of the tree; its message
// is only the cause's.
type terminate struct{ err error }

func (t terminate) Error() string   { return t.err.Error() }
func (t terminate) Unwrap() []error { return []error{t.err, suture.ErrTerminateSupervisorTree} }
func (n named) String() string      { return n.name }

// Add supervises svc under name.
func (t *Tree) Add(name string, svc suture.Service) {
	t.mu.Lock()
	t.restarts[name] = 0
	t.mu.Unlock()
	t.root.Add(named{name: name, svc: svc})
}

func (t *Tree) event(e suture.Event) {
	log := t.cfg.Logger
	switch e := e.(type) {
	case suture.EventServicePanic:
		log.Error("worker panicked; restarting", "worker", e.ServiceName, "panic", e.PanicMsg)
		t.restarted(e.ServiceName)
	case suture.EventServiceTerminate:
		log.Error("worker failed; restarting", "worker", e.ServiceName, "err", fmt.Sprint(e.Err))
		t.restarted(e.ServiceName)
	case suture.EventBackoff:
		log.Warn("too many failures; backing off", "supervisor", e.SupervisorName)
	case suture.EventResume:
		log.Info("resuming after backoff", "supervisor", e.SupervisorName)
	case suture.EventStopTimeout:
		log.Error("worker did not stop in time", "worker", e.ServiceName)
	}
}

func (t *Tree) restarted(name string) {
	t.mu.Lock()
	t.restarts[name]++
	t.mu.Unlock()
	if t.cfg.OnRestart != nil {
		t.cfg.OnRestart(name)
	}
}

// Restarts returns the restarts per worker so far.
func (t *Tree) Restarts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.restarts)
}

// Workers lists the worker names, sorted.
func (t *Tree) Workers() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Sorted(maps.Keys(t.restarts))
}

// Serve runs the tree until ctx ends, then stops every worker, each
// within ShutdownTimeout. It returns nil then, or the error of a worker
// that failed fatally (outbox.Fatal), after stopping the others.
func (t *Tree) Serve(ctx context.Context) error {
	err := t.root.Serve(ctx)
	var term terminate
	if errors.As(err, &term) {
		return term.err
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}
