package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
)

// A request's W3C traceparent travels with its event: HTTP → order →
// outbox row → relay → the Kafka record's traceparent header. A request
// without one yields a record without one.
func TestTraceparentFromHTTPReachesTheRecord(t *testing.T) {
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	base, logs := serveSecure(t, "--brokers", b.Addrs()[0], "--topic-template", "trace.{aggregatetype}")
	c := &testenv.APIClient{T: t, Base: base}
	const created, updated = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	resp, body := c.Do("POST", "/orders", `{"customer_id":"c1","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`,
		map[string]string{"traceparent": created})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var order struct{ ID string }
	if err := json.Unmarshal(body, &order); err != nil || order.ID == "" {
		t.Fatalf("create answered %s (%v)", body, err)
	}
	if resp, body := c.Do("PATCH", "/orders/"+order.ID, `{"address":"1 Trace Way"}`,
		map[string]string{"If-Match": `"1"`, "traceparent": updated}); resp.StatusCode != http.StatusOK {
		t.Fatalf("update: %d %s", resp.StatusCode, body)
	}
	untraced := c.Create("c2")

	want := map[string]map[string]string{ // order id → sequence → traceparent
		order.ID: {"1": created, "2": updated},
		untraced: {"1": ""},
	}
	var recs []kafkatest.Received
	testenv.Eventually(t, 20*time.Second, "three records on the topic", func() bool {
		recs, err = kafkatest.ReadAll(t.Context(), b.Addrs(), []string{"trace.order"})
		return err == nil && len(recs) >= 3
	})
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3\n%s", len(recs), logs)
	}
	for _, r := range recs {
		seqs, ok := want[r.Key]
		if !ok {
			t.Fatalf("record for unknown order %s", r.Key)
		}
		w, ok := seqs[r.Headers["sequence"]]
		if !ok {
			t.Fatalf("record of %s with sequence %q", r.Key, r.Headers["sequence"])
		}
		got, has := r.Headers["traceparent"]
		if got != w || has != (w != "") {
			t.Errorf("record %s#%s: traceparent %q (present %v), want %q", r.Key, r.Headers["sequence"], got, has, w)
		}
	}
}
