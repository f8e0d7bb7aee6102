package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// buildBinary builds ./cmd/outbox once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outbox")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	// Ports the binary binds itself (0: any free one); its log says which.
	stderr := &testenv.CappedBuffer{}
	cmd := exec.Command(bin, "serve", "--store", "sqlite://"+filepath.Join(t.TempDir(), "e2e.db"),
		"--http", "127.0.0.1:0", "--broker-port", "0")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	c := &testenv.APIClient{T: t}
	var brokerAddr string
	testenv.Eventually(t, 20*time.Second, "serve becomes ready", func() bool {
		log := stderr.String()
		httpAddr, broker := testenv.ListenAddr(log, "HTTP API listening"), testenv.ListenAddr(log, "embedded Kafka-protocol broker listening")
		if httpAddr == "" || broker == "" {
			return false
		}
		c.Base, brokerAddr = "http://"+httpAddr, broker
		resp, err := http.Get(c.Base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	id := c.Create("e2e-customer")
	if resp, body := c.Do("PATCH", "/orders/"+id, `{"address":"1 Kafka Way"}`, map[string]string{"If-Match": `"1"`}); resp.StatusCode != 200 {
		t.Fatalf("update: %d %s", resp.StatusCode, body)
	}
	if resp, body := c.Do("POST", "/orders/"+id+"/cancel", "", map[string]string{"If-Match": `"2"`}); resp.StatusCode != 200 {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}

	// A plain Kafka client on the embedded broker sees the three events.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr),
		kgo.ConsumeTopics("outbox.event.order"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for len(got) < 3 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != 3 {
		t.Fatalf("consumed %d records, want 3\n%s", len(got), stderr.String())
	}
	for i, want := range []string{"OrderCreated", "OrderUpdated", "OrderCancelled"} {
		r := got[i]
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		var payload struct {
			OrderID string `json:"order_id"`
			Version int64  `json:"version"`
		}
		json.Unmarshal(r.Value, &payload)
		if string(r.Key) != id || h["type"] != want || h["sequence"] != strconv.Itoa(i+1) || h["id"] == "" || payload.OrderID != id || payload.Version != int64(i+1) {
			t.Fatalf("record %d: key %s headers %v payload %s; want %s of %s at sequence %d", i, r.Key, h, r.Value, want, id, i+1)
		}
	}

	// SIGTERM: a bounded, clean shutdown.
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop within 20 s of SIGTERM\n%s", stderr.String())
	}
}
