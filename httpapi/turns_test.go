package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/order"
)

// heldOrders holds every Get until released and counts those running.
type heldOrders struct {
	httpapi.Orders
	running, peak atomic.Int32
	started       chan struct{}
	release       chan struct{}
}

func (h *heldOrders) Get(ctx context.Context, id string) (order.Order, error) {
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	h.started <- struct{}{}
	select {
	case <-h.release:
		return order.Order{ID: id}, nil
	case <-ctx.Done():
		return order.Order{}, ctx.Err()
	}
}

func TestOrderCommandsRunAtMostMaxOrderRequestsAtOnce(t *testing.T) {
	held := &heldOrders{started: make(chan struct{}, 3), release: make(chan struct{})}
	h := httpapi.New(httpapi.Deps{Orders: held, MaxOrderRequests: 2})

	answers := make(chan int, 3)
	for range 2 {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/a", nil))
			answers <- rec.Code
		}()
	}
	<-held.started // both take a turn at once: nothing else runs
	<-held.started
	// A third waits for a turn; its request ends first: 503, and it never
	// ran.
	ctx, cancel := context.WithCancel(context.Background())
	third := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/c", nil).WithContext(ctx))
		third <- rec
	}()
	cancel()
	rec := <-third
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a request with no turn answered %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	close(held.release)
	for range 2 {
		if code := <-answers; code != http.StatusOK {
			t.Fatalf("a request with a turn answered %d", code)
		}
	}
	if p := held.peak.Load(); p != 2 {
		t.Fatalf("%d order commands ran at once, want 2", p)
	}
}

// panicky panics in every command.
type panicky struct{ httpapi.Orders }

func (panicky) Get(context.Context, string) (order.Order, error) { panic("boom") }

func TestAHandlerPanicIsA500ProblemAndTheTurnIsReturned(t *testing.T) {
	h := httpapi.New(httpapi.Deps{Orders: panicky{}, MaxOrderRequests: 1})
	for range 3 { // with one turn, a turn kept by a panic would hang the second
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/a", nil))
		if rec.Code != http.StatusInternalServerError || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
			t.Fatalf("a panicking handler answered %d %q, want a 500 problem", rec.Code, rec.Header().Get("Content-Type"))
		}
		var p httpapi.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != 500 {
			t.Fatalf("problem %s: %v", rec.Body, err)
		}
	}
}
