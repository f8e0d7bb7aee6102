// Package dlq is the dead-letter worker, the design's DlqActor: it owns
// the writes to the dead-letter store, keeps counts, logs each dead
// letter, and sends alerts. A failing write or alert is logged and the
// worker carries on (the Resume policy); the relay retries the write.
package dlq

import (
	"context"
	"fmt"
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

// Worker implements relay.DeadLetterStore: reads go straight to the store,
// AddDeadLetter goes through the worker's own goroutine.
type Worker struct {
	outbox.DeadLetterStore
	notify  Notifier
	counter Counter
	log     *slog.Logger

	writes chan write
	alerts chan outbox.DeadLetter
	total  atomic.Int64
	sent   atomic.Int64
	failed atomic.Int64
}

var _ outbox.DeadLetterStore = (*Worker)(nil)

type write struct {
	ctx   context.Context
	dl    outbox.DeadLetter
	reply chan writeResult
}

type writeResult struct {
	dl  outbox.DeadLetter
	err error
}

// New wraps store. notify and counter may be nil.
func New(store outbox.DeadLetterStore, notify Notifier, counter Counter, log *slog.Logger) *Worker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{DeadLetterStore: store, notify: notify, counter: counter, log: log,
		writes: make(chan write), alerts: make(chan outbox.DeadLetter, 256)}
}

// AddDeadLetter hands the write to the worker and waits for it.
func (w *Worker) AddDeadLetter(ctx context.Context, dl outbox.DeadLetter) (outbox.DeadLetter, error) {
	req := write{ctx: ctx, dl: dl, reply: make(chan writeResult, 1)}
	select {
	case w.writes <- req:
	case <-ctx.Done():
		return dl, fmt.Errorf("dlq: worker unavailable: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.dl, r.err
	case <-ctx.Done():
		return dl, fmt.Errorf("dlq: worker unavailable: %w", ctx.Err())
	}
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

// Serve performs writes and sends alerts until ctx ends.
func (w *Worker) Serve(ctx context.Context) error {
	alertsDone := make(chan struct{})
	go func() { defer close(alertsDone); w.sendAlerts(ctx) }()
	defer func() { <-alertsDone }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case req := <-w.writes:
			dl, err := w.DeadLetterStore.AddDeadLetter(req.ctx, req.dl)
			req.reply <- writeResult{dl, err}
			if err != nil {
				w.log.Error("dead-letter write failed", "event_id", req.dl.Message.ID, "err", err)
				continue
			}
			w.total.Add(1)
			w.log.Error("event dead-lettered",
				"id", dl.ID, "event_id", dl.Message.ID, "aggregate", dl.Message.Key().String(),
				"type", dl.Message.Type, "error", dl.Error, "parked_behind", dl.ParkedBehind)
			if w.notify == nil {
				continue
			}
			select {
			case w.alerts <- dl:
			default:
				w.count("dropped")
				w.log.Warn("alert queue full; alert dropped", "id", dl.ID)
			}
		}
	}
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
