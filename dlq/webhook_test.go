package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/outbox"
)

// hangUp drops the connection without an answer: the client sees a
// network error, not a status.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// The webhook retries what may pass on a second try (network errors, 429,
// 5xx) and gives up at once on any other answer. Each server answers its
// first failures as the case says, then 200.
func TestWebhookRetriesNetworkErrors429And5xxOnly(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failures  int // answers before the first 200
		fail      func(w http.ResponseWriter)
		wantCalls int64
		wantErr   bool
	}{
		{"429 once", 1, func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) }, 2, false},
		{"500 once", 1, func(w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) }, 2, false},
		{"502 twice", 2, func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) }, 3, false},
		{"503 once", 1, func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }, 2, false},
		{"connection dropped once", 1, hangUp, 2, false},
		{"429 every time: four attempts", 100, func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) }, 4, true},
		{"400: not retried", 100, func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) }, 1, true},
		{"404: not retried", 100, func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }, 1, true},
		{"410: not retried", 100, func(w http.ResponseWriter) { w.WriteHeader(http.StatusGone) }, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			var texts atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n := calls.Add(1); n <= int64(tc.failures) {
					tc.fail(w)
					return
				}
				if r.Method == http.MethodPost && r.Header.Get("Content-Type") == "application/json" {
					texts.Add(1)
				}
			}))
			defer srv.Close()
			hook, err := dlq.NewWebhook(srv.URL + "/services/T000/B000/SECRET-PART")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err = hook.Notify(ctx, deadLetter(t))
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("%d calls, want %d", got, tc.wantCalls)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("Notify() = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "SECRET-PART") {
				t.Fatalf("the error shows the webhook URL: %v", err)
			}
			if !tc.wantErr && texts.Load() != 1 {
				t.Fatalf("%d alerts delivered as JSON, want 1", texts.Load())
			}
		})
	}
}

// A port nobody listens on refuses every connection: that network error
// is retried, waiting out the whole schedule (200, 400, 800 ms ± 20 %)
// before the webhook gives up, and the error does not show the URL.
func TestWebhookRetriesARefusedConnection(t *testing.T) {
	closed := "http://" + refusingAddr(t) + "/hooks/SECRET-TOKEN"
	synctest.Test(t, func(t *testing.T) {
		hook, err := dlq.NewWebhook(closed)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = hook.Notify(t.Context(), deadLetter(t))
		waited := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) || outbox.IsPermanent(err) {
			t.Fatalf("Notify() = %v, want the refused connection, transient", err)
		}
		if strings.Contains(err.Error(), "SECRET-TOKEN") {
			t.Fatalf("the error shows the webhook URL: %v", err)
		}
		if lo, hi := 1120*time.Millisecond, 1680*time.Millisecond; waited < lo || waited > hi {
			t.Fatalf("gave up after %s of retries, want %s..%s: three waits of the schedule", waited, lo, hi)
		}
	})
}

// refusingAddr is a loopback address that refuses connections for the
// whole test: a socket bound and never listening holds the port, so no
// other process can take it between the test's choice and its connects.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
