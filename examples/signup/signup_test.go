package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
// standalone relay beside it); what it returns runs before the service
// closes.
func signUpAndCheck(t *testing.T, cfg Config, started ...func(s *Service) (stop func())) {
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
		defer f(s)()
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

// TestSignupWithItsOwnTableAndTheStandaloneRelay is README's "With the
// standalone relay": the service with -own-table -no-relay, and the
// outbox binary, built here, running `outbox relay --mapping ...` on the
// same SQLite file; the welcome emails arrive and the relay logs no
// error.
func TestSignupWithItsOwnTableAndTheStandaloneRelay(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command builds the outbox binary: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "outbox")
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, "github.com/outbox-dev/outbox/cmd/outbox")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/outbox: %v\n%s", err, out)
	}
	db := filepath.Join(t.TempDir(), "signup.db")
	cfg := Config{DB: db, OwnTable: true, NoRelay: true}
	// README's command on the in-process broker; on Apache Kafka a topic
	// of the test's own.
	replacement := "outbox.event.${routedByValue}"
	if os.Getenv("OUTBOX_TEST_KAFKA_BROKERS") != "" {
		cfg = kafkaFor(t, cfg)
		replacement = cfg.Topic
	}
	var logs lockedBuffer
	signUpAndCheck(t, cfg, func(s *Service) func() {
		relay := exec.Command(bin, "relay", "--store", "sqlite://"+db, "--brokers", strings.Join(s.Brokers(), ","),
			"--mapping", "table.name=user_events", "--mapping", "route.topic.replacement="+replacement)
		relay.Stdout, relay.Stderr = &logs, &logs
		if err := relay.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { relay.Process.Kill() }) // should the start fail the test
		stop := func() {
			relay.Process.Signal(os.Interrupt)
			if err := relay.Wait(); err != nil {
				t.Errorf("outbox relay: %v\n%s", err, logs.String())
			}
			for line := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(line, "level=ERROR") {
					t.Errorf("outbox relay logged an error: %s", line)
				}
			}
			if t.Failed() {
				t.Logf("outbox relay's log:\n%s", logs.String())
			}
		}
		testenv.Eventually(t, 30*time.Second, "outbox relay starts", func() bool { return strings.Contains(logs.String(), "msg=relaying") })
		return stop
	})
}

// lockedBuffer is a child's output, read while it writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
