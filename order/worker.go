package order

import (
	"context"
	"errors"
	"fmt"
)

// ErrUnavailable is returned when no order worker took or finished the
// command in time (it may be restarting after a crash).
var ErrUnavailable = errors.New("order service unavailable")

// Mailbox carries commands to the order workers, the design's OrderActor:
// HTTP handlers send, supervised workers receive. A worker that panics is
// restarted by its supervisor; the command it held fails with
// ErrUnavailable and wrote nothing (its transaction never committed).
type Mailbox struct {
	cmds chan command
}

// NewMailbox returns a mailbox with room for queued commands.
func NewMailbox(queue int) *Mailbox {
	return &Mailbox{cmds: make(chan command, queue)}
}

type command struct {
	name  string
	run   func(*Service) (Order, bool, error)
	reply chan result
}

type result struct {
	order    Order
	replayed bool
	err      error
}

func (m *Mailbox) call(ctx context.Context, name string, run func(*Service) (Order, bool, error)) (Order, bool, error) {
	c := command{name: name, run: run, reply: make(chan result, 1)}
	select {
	case m.cmds <- c:
	case <-ctx.Done():
		return Order{}, false, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	select {
	case r := <-c.reply:
		return r.order, r.replayed, r.err
	case <-ctx.Done():
		return Order{}, false, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// Create sends a create command.
func (m *Mailbox) Create(ctx context.Context, in CreateInput, meta Meta) (Order, bool, error) {
	return m.call(ctx, "create", func(s *Service) (Order, bool, error) { return s.Create(ctx, in, meta) })
}

// Get sends a get command.
func (m *Mailbox) Get(ctx context.Context, id string) (Order, error) {
	o, _, err := m.call(ctx, "get", func(s *Service) (Order, bool, error) { o, err := s.Get(ctx, id); return o, false, err })
	return o, err
}

// Update sends an update command.
func (m *Mailbox) Update(ctx context.Context, id string, in UpdateInput, expected int64, meta Meta) (Order, error) {
	o, _, err := m.call(ctx, "update", func(s *Service) (Order, bool, error) {
		o, err := s.Update(ctx, id, in, expected, meta)
		return o, false, err
	})
	return o, err
}

// Cancel sends a cancel command.
func (m *Mailbox) Cancel(ctx context.Context, id string, expected int64, meta Meta) (Order, error) {
	o, _, err := m.call(ctx, "cancel", func(s *Service) (Order, bool, error) {
		o, err := s.Cancel(ctx, id, expected, meta)
		return o, false, err
	})
	return o, err
}

// Worker serves a mailbox with a service. Run several for concurrency.
type Worker struct {
	svc *Service
	mb  *Mailbox
	// BeforeCommand, when set, runs before each command; tests use it to
	// inject panics.
	BeforeCommand func(name string)
}

// NewWorker builds a worker.
func NewWorker(svc *Service, mb *Mailbox) *Worker { return &Worker{svc: svc, mb: mb} }

// Serve handles commands until ctx ends. A panic answers the command with
// ErrUnavailable and then propagates, so the supervisor restarts the
// worker (the design's Restart policy).
func (w *Worker) Serve(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-w.mb.cmds:
			w.handle(c)
		}
	}
}

func (w *Worker) handle(c command) {
	defer func() {
		if p := recover(); p != nil {
			c.reply <- result{err: fmt.Errorf("%w: worker crashed during %s", ErrUnavailable, c.name)}
			panic(p)
		}
	}()
	if w.BeforeCommand != nil {
		w.BeforeCommand(c.name)
	}
	o, replayed, err := c.run(w.svc)
	c.reply <- result{order: o, replayed: replayed, err: err}
}
