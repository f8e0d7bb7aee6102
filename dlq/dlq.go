// Package dlq owns dead letters: the worker, the design's DlqActor, which
// counts, logs and alerts each dead letter written (a failing alert is
// logged and the worker carries on: the Resume policy; the relay retries
// a failing write), and the operator's operations (list, show, replay,
// skip) that the HTTP API and the CLI both call.
package dlq

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/outbox-dev/outbox/outbox"
)

// Notifier sends an alert for a dead letter.
type Notifier interface {
	Notify(ctx context.Context, dl outbox.DeadLetter) error
}

// Counter hears alert outcomes (sent, failed, dropped), for metrics.
type Counter interface{ Alert(outcome string) }

// Worker implements outbox.DeadLetterStore over a store: every dead letter
// written through it is counted, logged (once, here) and alerted. Writes
// happen on the caller's goroutine (the relay's lane, which owns the
// aggregate's order); alerts go through a bounded queue to Serve's
// goroutine, so a slow webhook never holds the relay back.
type Worker struct {
	outbox.DeadLetterStore
	notify  Notifier
	counter Counter
	log     *slog.Logger

	alerts chan outbox.DeadLetter
	total  atomic.Int64
	sent   atomic.Int64
	failed atomic.Int64
}

var _ outbox.DeadLetterStore = (*Worker)(nil)

// Config configures a Worker; every field may be left zero.
type Config struct {
	Notifier Notifier // alerts; none when nil
	Counter  Counter  // alert outcomes, for metrics
	Logger   *slog.Logger
}

// New wraps store.
func New(store outbox.DeadLetterStore, cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{DeadLetterStore: store, notify: cfg.Notifier, counter: cfg.Counter, log: cfg.Logger,
		alerts: make(chan outbox.DeadLetter, 256)}
}

// AddDeadLetter writes dl to the store, then counts, logs and queues an
// alert for it. A failed write is returned for the caller to retry.
func (w *Worker) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	stored, err := w.DeadLetterStore.AddDeadLetter(ctx, dl)
	if err != nil {
		return stored, err
	}
	w.total.Add(1)
	w.log.Error("event dead-lettered",
		"id", stored.ID, "event_id", stored.Message.ID, "aggregate", stored.Message.Key().String(),
		"type", stored.Message.Type, "error", stored.Error, "parked_behind", stored.ParkedBehind)
	if w.notify != nil {
		select {
		case w.alerts <- stored:
		default:
			w.count("dropped")
			w.log.Warn("alert queue full; alert dropped", "id", stored.ID)
		}
	}
	return stored, nil
}

// Stats are the worker's counts since start.
type Stats struct {
	DeadLettered int64 `json:"dead_lettered"`
	AlertsSent   int64 `json:"alerts_sent"`
	AlertsFailed int64 `json:"alerts_failed"`
}

// Stats returns the counts.
func (w *Worker) Stats() Stats {
	return Stats{DeadLettered: w.total.Load(), AlertsSent: w.sent.Load(), AlertsFailed: w.failed.Load()}
}

// Serve sends the queued alerts until ctx ends.
func (w *Worker) Serve(ctx context.Context) error {
	w.sendAlerts(ctx)
	return nil
}

func (w *Worker) sendAlerts(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case dl := <-w.alerts:
			if err := w.notify.Notify(ctx, dl); err != nil {
				w.failed.Add(1)
				w.count("failed")
				w.log.Error("alert not delivered", "id", dl.ID, "err", err)
				continue
			}
			w.sent.Add(1)
			w.count("sent")
		}
	}
}

func (w *Worker) count(outcome string) {
	if w.counter != nil {
		w.counter.Alert(outcome)
	}
}
