package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testcert"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
)

// serve runs `outbox serve` in this process until the test ends.
func serveSecure(t *testing.T, args ...string) (base string, logs *testenv.CappedBuffer) {
	t.Helper()
	logs = &testenv.CappedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	args = append([]string{"serve", "--http", "127.0.0.1:0", "--log-level", "debug",
		"--store", "sqlite://" + filepath.Join(t.TempDir(), "o.db"), "--poll-interval", "10ms", "--breaker-open-timeout", "1s"}, args...)
	go func() { done <- run(ctx, args, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, logs)
		}
	})
	testenv.Eventually(t, 10*time.Second, "serve listening", func() bool {
		addr := testenv.ListenAddr(logs.String(), "HTTP API listening")
		if addr == "" {
			return false
		}
		base = "http://" + addr
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return base, logs
}

func TestServeOverTLSAndSCRAMKeepsThePasswordSecret(t *testing.T) {
	const user, password, wrong = "outbox", "s3cret-correct-password", "s3cret-WRONG-password"
	pair := testcert.New(t)
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Opts: []kfake.Opt{
		kfake.TLS(pair.Server), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, password)}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	secure := []string{"--brokers", b.Addrs()[0], "--kafka-ca-file", pair.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-user", user, "--topic-template", "sec.{aggregatetype}"}

	t.Run("wrong password: back-pressure, no dead letters, no secret in logs", func(t *testing.T) {
		t.Setenv("OUTBOX_KAFKA_SASL_PASSWORD", wrong)
		base, logs := serveSecure(t, secure...)
		c := &testenv.APIClient{T: t, Base: base}
		c.Create("c1")
		var st app.StatusDoc
		var last []byte
		defer func() {
			if t.Failed() {
				t.Logf("status %s\nlogs:\n%s", last, logs)
			}
		}()
		testenv.Eventually(t, 20*time.Second, "the relay retrying", func() bool {
			_, body := c.Do("GET", "/status", "", nil)
			last = body
			json.Unmarshal(body, &st)
			return st.Retried >= 2 // each attempt waits out a metadata refresh (~5 s)
		})
		if st.DeadLettered != 0 || st.Published != 0 {
			t.Fatalf("with a wrong password: %d published, %d dead-lettered", st.Published, st.DeadLettered)
		}
		if strings.Contains(logs.String(), wrong) || strings.Contains(logs.String(), password) {
			t.Fatal("a password appears in the logs")
		}
		// An operator must be told the credentials are refused, not that
		// Kafka is down: in the logs and in the broker health check.
		if !strings.Contains(logs.String(), "SASL authentication failed") {
			t.Fatal("the logs do not name the SASL failure")
		}
		testenv.Eventually(t, 10*time.Second, "the broker health check saying the relay is not authorized", func() bool {
			_, body := c.Do("GET", "/status", "", nil)
			last = body
			var doc app.StatusDoc
			return json.Unmarshal(body, &doc) == nil && strings.Contains(doc.Health["broker"].Error, "not authorized")
		})
	})

	t.Run("right password from a file: published over TLS", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "kafka-password")
		if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OUTBOX_KAFKA_SASL_PASSWORD_FILE", file)
		base, logs := serveSecure(t, secure...)
		c := &testenv.APIClient{T: t, Base: base}
		c.Create("c2")
		tlsCfg, err := kafka.TLSConfig(pair.CAFile, "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		opts, err := kafka.Security{TLS: tlsCfg, SASLMechanism: "SCRAM-SHA-512", SASLUser: user, SASLPassword: password}.Opts()
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, "the event on the secured broker", func() bool {
			recs, err := kafkatest.ReadAll(t.Context(), b.Addrs(), []string{"sec.order"}, opts...)
			return err == nil && len(recs) >= 1
		})
		if strings.Contains(logs.String(), password) {
			t.Fatal("the password appears in the logs")
		}
	})
}
