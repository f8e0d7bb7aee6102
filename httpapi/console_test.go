package httpapi_test

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/httpapi"
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
	if strings.Contains(w.Body.String(), "payload") {
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
