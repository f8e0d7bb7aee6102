package httpapi_test

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A type error names the array element it is in, in JSON's words, not Go's.
func TestTypeErrorNamesTheItemInJSONWords(t *testing.T) {
	f := newFixture(t, "")
	body := `{"customer_id":"c1","currency":"EUR","items":[` + item + `,{"sku":"b","quantity":"two","unit_price":1}]}`
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/orders", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	f.handler.ServeHTTP(w, r)
	if w.Code != 400 || !strings.Contains(w.Body.String(), `"detail":"items[1].quantity must be an integer within range"`) ||
		strings.Contains(w.Body.String(), "int64") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
