package dlq_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/memstore"
)

func deadLetter(t *testing.T) outbox.DeadLetter {
	m, err := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]int{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}
}

func TestWorkerWritesCountsAndAlertsWithRetries(t *testing.T) {
	var calls atomic.Int64
	var text atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // retried
			return
		}
		var msg struct{ Text string }
		json.NewDecoder(r.Body).Decode(&msg)
		text.Store(msg.Text)
	}))
	defer srv.Close()
	hook, err := dlq.NewWebhook(srv.URL + "/services/T000/B000/secret")
	if err != nil {
		t.Fatal(err)
	}
	store := memstore.New()
	w := dlq.New(store, dlq.Config{Notifier: hook})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- w.Serve(ctx) }()
	dl, err := w.AddDeadLetter(ctx, deadLetter(t))
	if err != nil || dl.ID != 1 {
		t.Fatalf("write through the worker: %+v %v", dl, err)
	}
	if parked, _ := store.ParkedAggregates(ctx); len(parked) != 1 {
		t.Fatal("the worker did not write to the store")
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().AlertsSent == 0 && time.Now().Before(deadline) {
		<-time.After(10 * time.Millisecond)
	}
	if st := w.Stats(); st.AlertsSent != 1 || st.DeadLettered != 1 || calls.Load() != 2 {
		t.Fatalf("stats %+v after %d webhook calls; want one alert sent after one retry", st, calls.Load())
	}
	if got, _ := text.Load().(string); !strings.Contains(got, "OrderCreated") || !strings.Contains(got, "MESSAGE_TOO_LARGE") {
		t.Fatalf("alert text %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Writes do not wait for the worker's goroutine: with Serve stopped
	// (restarting, say), a dead letter is still stored and counted, and
	// its alert waits in the queue.
	if _, err := w.AddDeadLetter(ctx, deadLetter(t)); err != nil {
		t.Fatalf("a write while the worker restarts: %v", err)
	}
	if st := w.Stats(); st.DeadLettered != 2 || st.AlertsSent != 1 {
		t.Fatalf("stats %+v after a write while stopped", st)
	}
}

func TestWebhookErrorsDoNotLeakTheURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // connection refused from now on
	hook, _ := dlq.NewWebhook(srv.URL + "/hooks/SECRET-TOKEN")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := hook.Notify(ctx, deadLetter(t))
	if err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("error %v must exist and not contain the URL's secret", err)
	}
	if _, err := dlq.NewWebhook("ftp://x"); err == nil {
		t.Fatal("a non-http URL was accepted")
	}
}
