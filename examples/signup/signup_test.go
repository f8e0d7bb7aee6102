package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/internal/testenv"
)

// kafkaFor gives cfg Apache Kafka when OUTBOX_TEST_KAFKA_BROKERS is set,
// with a topic and a consumer group of the test's own; otherwise the
// service starts its in-process broker.
func kafkaFor(t *testing.T, cfg Config) Config {
	t.Helper()
	if os.Getenv("OUTBOX_TEST_KAFKA_BROKERS") != "" {
		cfg.Brokers = testenv.KafkaBrokers(t)
		t.Logf("on Apache Kafka at %s", strings.Join(cfg.Brokers, ","))
	}
	id := strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	cfg.Topic, cfg.Group = "signup.test."+id, "signup-mailer-"+id
	return cfg
}

// signUpAndCheck runs the service, signs three users up over HTTP, and
// waits until each got exactly one welcome email (the mailer, through the
// inbox) and Kafka holds their three UserSignedUp records (the relay).
// started, when given, runs once the service's tables exist (a
// standalone relay beside it).
func signUpAndCheck(t *testing.T, cfg Config, started ...func(s *Service)) {
	t.Helper()
	cfg.HTTP = "127.0.0.1:0"
	if cfg.Topic == "" {
		cfg.Topic = Topic
	}
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range started {
		f(s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var ids []string
	for i := range 3 {
		resp, err := http.Post("http://"+s.Addr()+"/signups", "application/json", strings.NewReader(fmt.Sprintf(`{"email":"user%d@example.com"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		var ev Signup
		json.NewDecoder(resp.Body).Decode(&ev)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || ev.UserID == "" {
			t.Fatalf("sign-up: %d", resp.StatusCode)
		}
		ids = append(ids, ev.UserID)
	}
	for _, id := range ids {
		testenv.Eventually(t, 30*time.Second, "one welcome email for "+id, func() bool {
			resp, err := http.Get("http://" + s.Addr() + "/users/" + id + "/emails")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.Contains(string(b), `"welcome_emails": 1`)
		})
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers()...), kgo.ConsumeTopics(cfg.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]bool{}
	rctx, rcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer rcancel()
	for len(got) < len(ids) && rctx.Err() == nil {
		cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) { got[string(r.Key)] = true })
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("no record keyed %s on %s (got %v)", id, cfg.Topic, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestSignupOnSQLite(t *testing.T) {
	signUpAndCheck(t, Config{DB: filepath.Join(t.TempDir(), "signup.db")})
}

func TestSignupOnSQLiteWithItsOwnTableReadThroughAMapping(t *testing.T) {
	signUpAndCheck(t, Config{DB: filepath.Join(t.TempDir(), "signup.db"), OwnTable: true})
}

func TestSignupOnPostgres(t *testing.T) {
	if os.Getenv("OUTBOX_TEST_PG_DSN") == "" && os.Getenv("OUTBOX_REQUIRE_SERVICES") == "" {
		t.Skip("OUTBOX_TEST_PG_DSN is not set")
	}
	// On Apache Kafka when OUTBOX_TEST_KAFKA_BROKERS is set.
	signUpAndCheck(t, kafkaFor(t, Config{DB: testenv.PostgresDatabase(t)}))
}
