package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/outbox"
)

func get(h http.Handler, path string, headers map[string]string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", path, nil)
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	h.ServeHTTP(w, r)
	return w
}

func TestConsoleIsServedFromTheBinaryWithNothingFromElsewhere(t *testing.T) {
	f := newFixture(t, "s3cret")
	if w := get(f.handler, "/ui", nil); w.Code != http.StatusFound || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d %q", w.Code, w.Header().Get("Location"))
	}
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/index.html": "text/html",
		"/ui/console.js": "javascript", "/ui/console.css": "text/css"} {
		w := get(f.handler, path, nil)
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if w := get(f.handler, "/ui/nope.js", nil); w.Code != 404 {
		t.Errorf("GET /ui/nope.js: %d", w.Code)
	}
	// No CDN, no remote font or script: every URL in the files is this
	// origin's (the SVG namespace is a name, not a fetch).
	remote := regexp.MustCompile(`https?://[^"'\s)]+`)
	fs.WalkDir(httpapi.ConsoleFS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(httpapi.ConsoleFS(), path)
		for _, u := range remote.FindAllString(string(b), -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to %s", path, u)
			}
		}
		if strings.Contains(string(b), "innerHTML") {
			t.Errorf("%s uses innerHTML: server values must be written as text", path)
		}
		return nil
	})
}

func TestParkedAggregatesListTheirWaitingEventsBehindTheToken(t *testing.T) {
	f := newFixture(t, "s3cret")
	f.deadLetters()
	if w := get(f.handler, "/dlq/parked", nil); w.Code != 401 {
		t.Fatalf("GET /dlq/parked without the token: %d", w.Code)
	}
	w := get(f.handler, "/dlq/parked", map[string]string{"Authorization": "Bearer s3cret"})
	var doc struct {
		Items []struct {
			Aggregate struct {
				ID string `json:"aggregateid"`
			}
			Events []struct {
				ID       int64  `json:"id"`
				Sequence int64  `json:"sequence"`
				Error    string `json:"error"`
			}
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || w.Code != 200 {
		t.Fatalf("GET /dlq/parked: %d %v %s", w.Code, err, w.Body)
	}
	if len(doc.Items) != 1 || doc.Items[0].Aggregate.ID != "p" || len(doc.Items[0].Events) != 2 ||
		doc.Items[0].Events[0].ID != f.dlIDs[0] || doc.Items[0].Events[1].Sequence != 2 {
		t.Fatalf("parked aggregates: %s", w.Body)
	}
	if strings.Contains(w.Body.String(), `"payload":`) {
		t.Errorf("the parked list carries payloads: %s", w.Body)
	}
}

func TestStatusHistoryAndRequestMetricsByRoute(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	h := httpapi.New(httpapi.Deps{
		History: func() any { return map[string]any{"samples": []int{1, 2}} },
		ObserveRequest: func(route string, status int, d time.Duration) {
			mu.Lock()
			seen[route+" "+http.StatusText(status)]++
			mu.Unlock()
		},
	})
	if w := get(h, "/status/history", nil); w.Code != 200 || !strings.Contains(w.Body.String(), `"samples"`) {
		t.Fatalf("GET /status/history: %d %s", w.Code, w.Body)
	}
	// Without Orders (outbox relay's status server) there are no order routes.
	if w := get(h, "/orders/abc", nil); w.Code != 404 {
		t.Errorf("GET /orders/abc without orders: %d", w.Code)
	}
	get(h, "/healthz", nil)
	get(h, "/no/such/thing", nil)
	want := map[string]int{"GET /status/history OK": 1, "unmatched Not Found": 2, "GET /healthz OK": 1}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range want {
		if seen[k] != n {
			t.Errorf("observed %v, want %v", seen, want)
			break
		}
	}
}

// countingStore counts ListDeadLetters and wants each without payloads;
// it hides the store's ParkedEvents, so the API reads aggregate by
// aggregate.
type countingStore struct {
	httpapi.DeadLetters
	t     *testing.T
	lists int
}

func (c *countingStore) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	c.lists++
	if !f.OmitPayload || f.Limit < 1 {
		c.t.Errorf("the parked view lists %+v: want no payloads and a limit", f)
	}
	return c.DeadLetters.ListDeadLetters(ctx, f)
}

// withParkedEvents is countingStore with the store's one-query ParkedEvents.
type withParkedEvents struct {
	*countingStore
	pe interface {
		ParkedEvents(context.Context, []outbox.AggregateKey, int) ([]outbox.DeadLetter, error)
	}
}

func (w withParkedEvents) ParkedEvents(ctx context.Context, keys []outbox.AggregateKey, n int) ([]outbox.DeadLetter, error) {
	return w.pe.ParkedEvents(ctx, keys, n)
}

// /dlq/parked comes a page of aggregates at a time, each with its first
// events, without payloads; a store with ParkedEvents answers in one
// query, any other one query per aggregate of the page.
func TestParkedAggregatesArePagedWithoutPayloads(t *testing.T) {
	f := newFixture(t, "")
	now := time.Now().UTC()
	big := strings.Repeat("x", 10000)
	for _, agg := range []string{"a", "b", "c"} {
		for seq := range 3 {
			m, _ := outbox.NewMessage("order", agg, "OrderUpdated", int64(seq+1), map[string]string{"blob": big})
			if _, err := f.store.AddDeadLetter(context.Background(), outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE",
				FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	type page struct {
		Items []struct {
			Aggregate struct {
				ID string `json:"aggregateid"`
			}
			Parked struct {
				Events int `json:"parked_events"`
			}
			Events []struct {
				Sequence    int64 `json:"sequence"`
				PayloadSize int   `json:"payload_size"`
			}
		}
		NextOffset *int `json:"next_offset"`
	}
	counting := &countingStore{DeadLetters: f.store, t: t}
	for _, tc := range []struct {
		name      string
		store     httpapi.DeadLetters
		wantLists int
	}{{"one query", withParkedEvents{counting, f.store}, 0}, {"one query per aggregate", counting, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			counting.lists = 0
			h := httpapi.New(httpapi.Deps{DeadLetters: tc.store})
			var got []string
			next := "0"
			for next != "" {
				w := get(h, "/dlq/parked?limit=2&events=2&offset="+next, nil)
				var p page
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 200 {
					t.Fatalf("GET /dlq/parked: %d %v %s", w.Code, err, w.Body)
				}
				if strings.Contains(w.Body.String(), `"payload":`) || strings.Contains(w.Body.String(), "xxxx") {
					t.Fatalf("the parked view carries payloads: %.300s", w.Body)
				}
				for _, it := range p.Items {
					got = append(got, fmt.Sprintf("%s:%d", it.Aggregate.ID, it.Parked.Events))
					for _, e := range it.Events {
						got = append(got, fmt.Sprint(e.Sequence))
						if e.PayloadSize < len(big) {
							t.Errorf("payload_size %d, want > %d", e.PayloadSize, len(big))
						}
					}
				}
				next = ""
				if p.NextOffset != nil {
					next = fmt.Sprint(*p.NextOffset)
				}
			}
			// Two pages; two events of each aggregate's three.
			if want := "a:3 1 2 b:3 1 2 c:3 1 2"; strings.Join(got, " ") != want {
				t.Errorf("pages: %s, want %s", strings.Join(got, " "), want)
			}
			if counting.lists != tc.wantLists {
				t.Errorf("%d dead-letter lists, want %d", counting.lists, tc.wantLists)
			}
		})
	}
	if w := get(httpapi.New(httpapi.Deps{DeadLetters: f.store}), "/dlq/parked?offset=3", nil); w.Code != 200 ||
		!strings.Contains(w.Body.String(), `"items": []`) {
		t.Errorf("past the last page: %d %s", w.Code, w.Body)
	}
}
