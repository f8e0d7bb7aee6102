package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type fixture struct {
	t       testing.TB
	store   *sqlite.Store
	svc     *order.Service
	handler http.Handler
	orderID string
	dlIDs   []int64
	token   string
	ready   error
}

func newFixture(t testing.TB, token string) *fixture {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "api.db"), sqlite.Config{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: s, svc: order.NewService(s.Orders()), token: token}
	f.handler = httpapi.New(httpapi.Deps{
		Orders:      f.svc,
		DeadLetters: s,
		AdminToken:  token,
		Ready:       func(context.Context) error { return f.ready },
		Status: func(context.Context) any {
			return map[string]any{"breaker": "closed", "lag_events": 0, "published": 3, "restarts": map[string]int{"relay": 0}}
		},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "outbox_published_total 3") }),
	})
	return f
}

func (f *fixture) createOrder() {
	o, _, err := f.svc.Create(context.Background(), order.CreateInput{CustomerID: "c1", Currency: "EUR",
		Items: []order.Item{{SKU: "sku-1", Quantity: 2, UnitPrice: 500}}}, order.Meta{IdempotencyKey: "key-1"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.orderID = o.ID
}

func (f *fixture) cancelOrder() {
	if _, err := f.svc.Cancel(context.Background(), f.orderID, 0, order.Meta{}); err != nil {
		f.t.Fatal(err)
	}
}

// deadLetters parks aggregate order/p with two entries.
func (f *fixture) deadLetters() {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 2 {
		m, _ := outbox.NewMessage("order", "p", "OrderUpdated", int64(i+1), map[string]int{"v": i})
		dl, err := f.store.AddDeadLetter(context.Background(), outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now})
		if err != nil {
			f.t.Fatal(err)
		}
		f.dlIDs = append(f.dlIDs, dl.ID)
	}
}

// snapshot is everything a refused request must leave unchanged.
func (f *fixture) snapshot() string {
	ctx := context.Background()
	orders, events, err := labstore.CountRows(ctx, f.store)
	if err != nil {
		f.t.Fatal(err)
	}
	dls, _ := f.store.ListDeadLetters(ctx, outbox.DeadLetterFilter{Limit: -1})
	parked, _ := f.store.ParkedAggregates(ctx)
	var rows []string
	if f.orderID != "" {
		o, _ := f.svc.Get(ctx, f.orderID)
		rows = append(rows, fmt.Sprint(o.Version, o.Status, o.Address, len(o.Items)))
	}
	b, _ := json.Marshal([]any{orders, events, dls, parked, rows})
	return string(b)
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"`)
)

func normalize(s string) string {
	return timeRE.ReplaceAllString(uuidRE.ReplaceAllString(s, "<uuid>"), `"<time>"`)
}

type apiCase struct {
	name    string
	setup   func(*fixture)
	method  string
	path    string // {order} and {dl0}, {dl1} are replaced
	body    string
	headers map[string]string
	status  int
}

func (c apiCase) request(f *fixture) *http.Request {
	path := strings.NewReplacer("{order}", f.orderID, "{dl0}", fmt.Sprint(at(f.dlIDs, 0)), "{dl1}", fmt.Sprint(at(f.dlIDs, 1))).Replace(c.path)
	r := httptest.NewRequest(c.method, path, strings.NewReader(c.body))
	if c.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.headers {
		r.Header.Set(k, v)
	}
	return r
}

func at(ids []int64, i int) int64 {
	if i < len(ids) {
		return ids[i]
	}
	return 0
}

const item = `{"sku":"sku-1","quantity":1,"unit_price":100}`

func cases() []apiCase {
	create := `{"customer_id":"c1","currency":"EUR","items":[{"sku":"sku-1","quantity":2,"unit_price":500}]}`
	withOrder := func(f *fixture) { f.createOrder() }
	cancelled := func(f *fixture) { f.createOrder(); f.cancelOrder() }
	withDL := func(f *fixture) { f.deadLetters() }
	tooMany := `{"customer_id":"c1","currency":"EUR","items":[` + strings.TrimSuffix(strings.Repeat(item+",", order.MaxItems+1), ",") + `]}`
	auth := map[string]string{"Authorization": "Bearer s3cret"}
	return []apiCase{
		{name: "create", method: "POST", path: "/orders", body: create, headers: map[string]string{"Idempotency-Key": "k-new", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, status: 201},
		{name: "create_idempotent_replay", setup: withOrder, method: "POST", path: "/orders", body: create, headers: map[string]string{"Idempotency-Key": "key-1"}, status: 200},
		{name: "create_idempotency_key_reused", setup: withOrder, method: "POST", path: "/orders", body: strings.Replace(create, "EUR", "USD", 1), headers: map[string]string{"Idempotency-Key": "key-1"}, status: 422},
		{name: "create_too_large", method: "POST", path: "/orders", body: `{"customer_id":"` + strings.Repeat("x", 70<<10) + `"}`, status: 413},
		{name: "create_wrong_content_type", method: "POST", path: "/orders", body: create, headers: map[string]string{"Content-Type": "text/plain"}, status: 415},
		{name: "create_malformed", method: "POST", path: "/orders", body: `{"customer_id":`, status: 400},
		{name: "create_not_an_object", method: "POST", path: "/orders", body: `[1,2]`, status: 400},
		{name: "create_empty_body", method: "POST", path: "/orders", body: ``, headers: map[string]string{"Content-Type": "application/json"}, status: 400},
		{name: "create_unknown_field", method: "POST", path: "/orders", body: `{"customer_id":"c1","currency":"EUR","items":[` + item + `],"admin":true}`, status: 400},
		{name: "create_trailing_data", method: "POST", path: "/orders", body: create + `{}`, status: 400},
		{name: "create_quantity_zero", method: "POST", path: "/orders", body: strings.Replace(create, `"quantity":2`, `"quantity":0`, 1), status: 400},
		{name: "create_quantity_overflow", method: "POST", path: "/orders", body: strings.Replace(create, `"quantity":2`, `"quantity":1e30`, 1), status: 400},
		{name: "create_negative_price", method: "POST", path: "/orders", body: strings.Replace(create, `"unit_price":500`, `"unit_price":-1`, 1), status: 400},
		{name: "create_too_many_items", method: "POST", path: "/orders", body: tooMany, status: 400},
		{name: "create_long_customer", method: "POST", path: "/orders", body: strings.Replace(create, `"c1"`, `"`+strings.Repeat("c", 200)+`"`, 1), status: 400},
		{name: "create_bad_currency", method: "POST", path: "/orders", body: strings.Replace(create, "EUR", "euro", 1), status: 400},
		{name: "get", setup: withOrder, method: "GET", path: "/orders/{order}", status: 200},
		{name: "get_unknown", method: "GET", path: "/orders/nope", status: 404},
		{name: "update", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{"address":"1 Main St"}`, headers: map[string]string{"If-Match": `"1"`}, status: 200},
		{name: "update_items", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{"items":[` + item + `]}`, status: 200},
		{name: "update_stale_version", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{"address":"x"}`, headers: map[string]string{"If-Match": `"7"`}, status: 409},
		{name: "update_bad_if_match", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{"address":"x"}`, headers: map[string]string{"If-Match": `"abc"`}, status: 400},
		{name: "update_cancelled", setup: cancelled, method: "PATCH", path: "/orders/{order}", body: `{"address":"x"}`, status: 409},
		{name: "update_nothing", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{}`, status: 400},
		{name: "update_unknown", method: "PATCH", path: "/orders/nope", body: `{"address":"x"}`, status: 404},
		{name: "update_wrong_type", setup: withOrder, method: "PATCH", path: "/orders/{order}", body: `{"address":5}`, status: 400},
		{name: "cancel", setup: withOrder, method: "POST", path: "/orders/{order}/cancel", status: 200},
		{name: "cancel_twice", setup: cancelled, method: "POST", path: "/orders/{order}/cancel", status: 409},
		{name: "cancel_unknown", method: "POST", path: "/orders/nope/cancel", status: 404},
		{name: "cancel_with_body_field", setup: withOrder, method: "POST", path: "/orders/{order}/cancel", body: `{"why":"x"}`, status: 400},
		{name: "method_not_allowed", method: "DELETE", path: "/orders/x", status: 405},
		{name: "unknown_path", method: "GET", path: "/nope", status: 404},
		{name: "dlq_list", setup: withDL, method: "GET", path: "/dlq", headers: auth, status: 200},
		{name: "dlq_list_page", setup: withDL, method: "GET", path: "/dlq?limit=1&aggregate_type=order&aggregate_id=p&status=parked", headers: auth, status: 200},
		{name: "dlq_list_bad_limit", setup: withDL, method: "GET", path: "/dlq?limit=0", headers: auth, status: 400},
		{name: "dlq_list_bad_since", setup: withDL, method: "GET", path: "/dlq?since=yesterday", headers: auth, status: 400},
		{name: "dlq_list_unknown_param", setup: withDL, method: "GET", path: "/dlq?colour=red", headers: auth, status: 400},
		{name: "dlq_list_without_payloads", setup: withDL, method: "GET", path: "/dlq?payload=false", headers: auth, status: 200},
		{name: "dlq_list_bad_payload", setup: withDL, method: "GET", path: "/dlq?payload=no", headers: auth, status: 400},
		{name: "dlq_parked", setup: withDL, method: "GET", path: "/dlq/parked", headers: auth, status: 200},
		{name: "dlq_parked_page", setup: withDL, method: "GET", path: "/dlq/parked?limit=1&offset=0&events=1", headers: auth, status: 200},
		{name: "dlq_parked_bad_limit", setup: withDL, method: "GET", path: "/dlq/parked?limit=abc", headers: auth, status: 400},
		{name: "dlq_parked_bad_offset", setup: withDL, method: "GET", path: "/dlq/parked?offset=-1", headers: auth, status: 400},
		{name: "dlq_parked_unknown_param", setup: withDL, method: "GET", path: "/dlq/parked?foo=1", headers: auth, status: 400},
		{name: "status_history_unknown_param", method: "GET", path: "/status/history?since=abc", status: 400},
		{name: "dlq_list_unauthorized", setup: withDL, method: "GET", path: "/dlq", status: 401},
		{name: "dlq_get", setup: withDL, method: "GET", path: "/dlq/{dl0}", headers: auth, status: 200},
		{name: "dlq_get_unknown", setup: withDL, method: "GET", path: "/dlq/999", headers: auth, status: 404},
		{name: "dlq_get_not_a_number", setup: withDL, method: "GET", path: "/dlq/abc", headers: auth, status: 404},
		{name: "dlq_replay_dry_run", setup: withDL, method: "POST", path: "/dlq/{dl0}/replay?dry_run=true", headers: auth, status: 200},
		{name: "dlq_replay", setup: withDL, method: "POST", path: "/dlq/{dl0}/replay", body: `{"reason":"schema fixed"}`, headers: auth, status: 202},
		{name: "dlq_replay_wrong_token", setup: withDL, method: "POST", path: "/dlq/{dl0}/replay", headers: map[string]string{"Authorization": "Bearer nope"}, status: 401},
		{name: "dlq_replay_bad_dry_run", setup: withDL, method: "POST", path: "/dlq/{dl0}/replay?dry_run=maybe", headers: auth, status: 400},
		{name: "dlq_replay_unknown_field", setup: withDL, method: "POST", path: "/dlq/{dl0}/replay", body: `{"reasons":"x"}`, headers: auth, status: 400},
		{name: "dlq_replay_unknown", setup: withDL, method: "POST", path: "/dlq/999/replay", headers: auth, status: 404},
		{name: "dlq_skip", setup: withDL, method: "POST", path: "/dlq/{dl0}/skip", body: `{"reason":"poison"}`, headers: auth, status: 202},
		{name: "dlq_skip_not_first", setup: withDL, method: "POST", path: "/dlq/{dl1}/skip", headers: auth, status: 409},
		{name: "dlq_replay_all_dry_run", setup: withDL, method: "POST", path: "/dlq/replay?dry_run=true", headers: auth, status: 200},
		{name: "dlq_replay_all", setup: withDL, method: "POST", path: "/dlq/replay", headers: auth, status: 202},
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "readyz_not_ready", setup: func(f *fixture) { f.ready = errors.New("relay not running") }, method: "GET", path: "/readyz", status: 503},
		{name: "status", method: "GET", path: "/status", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
	}
}

func TestEndpoints(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, "s3cret")
			if c.setup != nil {
				c.setup(f)
			}
			before := f.snapshot()
			w := httptest.NewRecorder()
			f.handler.ServeHTTP(w, c.request(f))
			if w.Code != c.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, c.status, w.Body)
			}
			if w.Code >= 400 {
				if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("error Content-Type %q, want application/problem+json", ct)
				}
				if after := f.snapshot(); after != before {
					t.Fatalf("a %d changed the store:\nbefore %s\nafter  %s", w.Code, before, after)
				}
			}
			var headers []string
			for _, h := range []string{"Content-Type", "ETag", "Location", "Idempotent-Replayed", "Allow", "WWW-Authenticate", "Retry-After"} {
				if v := w.Header().Get(h); v != "" {
					headers = append(headers, h+": "+v)
				}
			}
			got := normalize(fmt.Sprintf("HTTP %d\n%s\n\n%s", w.Code, strings.Join(headers, "\n"), w.Body.String()))
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./httpapi -update)", err)
			}
			if got != string(want) {
				t.Fatalf("response differs from %s:\n%s\n--- want ---\n%s", golden, got, want)
			}
		})
	}
}

func TestWritesHappenOnlyOn2xx(t *testing.T) {
	f := newFixture(t, "")
	f.createOrder()
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, apiCase{method: "PATCH", path: "/orders/{order}", body: `{"address":"2 High St"}`, headers: map[string]string{"If-Match": `"1"`}}.request(f))
	if w.Code != 200 {
		t.Fatal(w.Body)
	}
	if orders, events, _ := labstore.CountRows(context.Background(), f.store); orders != 1 || events != 2 {
		t.Fatalf("after create and update: %d orders, %d events; want 1 and 2", orders, events)
	}
}

func TestNoTokenMeansOpenDLQ(t *testing.T) {
	f := newFixture(t, "")
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, httptest.NewRequest("GET", "/dlq", nil))
	if w.Code != 200 {
		t.Fatalf("GET /dlq without a configured token: %d", w.Code)
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi.json: %v (version %q)", err, doc.OpenAPI)
	}
	for _, c := range cases() {
		path := regexp.MustCompile(`\?.*`).ReplaceAllString(c.path, "")
		path = strings.NewReplacer("{order}", "{id}", "{dl0}", "{id}", "{dl1}", "{id}", "/nope", "/{id}", "/999", "/{id}", "/abc", "/{id}", "/x", "/{id}").Replace(path)
		if c.status == 405 || c.name == "unknown_path" {
			continue
		}
		if doc.Paths[path][strings.ToLower(c.method)] == nil {
			t.Errorf("%s %s is served but not documented", c.method, path)
		}
	}
	f := newFixture(t, "")
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, httptest.NewRequest("GET", "/openapi.json", nil))
	if w.Code != 200 || !json.Valid(w.Body.Bytes()) {
		t.Fatalf("GET /openapi.json: %d", w.Code)
	}
}

// The handlers must answer any input with a 2xx or a 4xx problem, never a
// 5xx or a panic, and a 4xx must write nothing.
func fuzzHandler(f *testing.F, method, path string) {
	f.Add([]byte(`{"customer_id":"c","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":1}]}`), "application/json")
	f.Add([]byte(`{"address":"x"}`), "application/json")
	f.Add([]byte(`{"items":[{"sku":"a","quantity":-1,"unit_price":1e99}]}`), "application/json")
	f.Add([]byte(`{"customer_id":"\u0000"}`), "application/merge-patch+json")
	f.Add([]byte(`null`), "application/json; charset=utf-8")
	f.Add([]byte{0xff, 0xfe}, "text/plain")
	fx := newFixture(f, "")
	fx.createOrder()
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		before := fx.snapshot()
		r := httptest.NewRequest(method, strings.Replace(path, "{order}", fx.orderID, 1), strings.NewReader(string(body)))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		fx.handler.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s answered %d: %s", method, path, w.Code, w.Body)
		}
		if w.Code >= 400 && fx.snapshot() != before {
			t.Fatalf("a %d wrote to the store", w.Code)
		}
	})
}

func FuzzCreateOrder(f *testing.F) { fuzzHandler(f, "POST", "/orders") }
func FuzzUpdateOrder(f *testing.F) { fuzzHandler(f, "PATCH", "/orders/{order}") }
