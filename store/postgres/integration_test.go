package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
)

// These tests run the relay on real PostgreSQL and real Apache Kafka.

var eventually = testenv.Eventually

func uniqueType(t *testing.T) string {
	return fmt.Sprintf("it%d", time.Now().UnixNano()%1e12)
}

// history reads what the outbox holds: the committed events.
func history(t *testing.T, s *postgres.Store) []checker.Event {
	t.Helper()
	rows, err := s.Pool().Query(t.Context(), `SELECT id::text, aggregatetype, aggregateid, sequence FROM outbox ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []checker.Event
	for rows.Next() {
		var e checker.Event
		var typ, agg string
		rows.Scan(&e.ID, &typ, &agg, &e.Sequence)
		e.Op, e.Aggregate = checker.OpCommit, typ+"/"+agg
		out = append(out, e)
	}
	return out
}

func checkKafka(t *testing.T, s *postgres.Store, brokers []string, topic string) checker.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadAll(ctx, brokers, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := checker.FromKafka(recs)
	if err != nil {
		t.Fatal(err)
	}
	return checker.Check(history(t, s), obs, nil)
}

func publisher(t *testing.T, brokers []string) *kafka.Publisher {
	p, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: kafka.TopicPerAggregateType})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func serveRelay(t *testing.T, r *relay.Relay) (stop func() error) { return testenv.Serve(t, r) }

func TestOrdersReachKafkaInOrder(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	for _, source := range []string{"cdc", "poll"} {
		t.Run(source, func(t *testing.T) {
			s, _ := newDB(t)
			ctx := t.Context()
			var src outbox.Source
			if source == "cdc" {
				c := cdc(t, s, postgres.CDCConfig{})
				if _, err := c.Setup(ctx); err != nil {
					t.Fatal(err)
				}
				src = c
			} else {
				src, _ = poll.NewSource(s, poll.Config{Interval: 10 * time.Millisecond, Wake: s.Wake()})
			}
			// A topic of this run's own, so the checker sees only its events.
			topic := uniqueType(t) + ".order"
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: topic})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			r, err := relay.New(src, pub, s, relay.Config{})
			if err != nil {
				t.Fatal(err)
			}
			serveRelay(t, r)
			var ids []string
			for i := range 20 {
				o, _, err := order.NewService(s.Orders()).Create(ctx, order.CreateInput{CustomerID: fmt.Sprint("c", i), Currency: "EUR",
					Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 100}}}, order.Meta{})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, o.ID)
			}
			for _, id := range ids {
				addr := "1 Main St"
				if _, err := order.NewService(s.Orders()).Update(ctx, id, order.UpdateInput{Address: &addr}, 1, order.Meta{}); err != nil {
					t.Fatal(err)
				}
				if _, err := order.NewService(s.Orders()).Cancel(ctx, id, 2, order.Meta{}); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 30*time.Second, "60 events published", func() bool {
				if os.Getenv("DEBUG_STATS") != "" {
					t.Logf("%+v", r.Stats())
				}
				return r.Stats().Published >= 60
			})
			rep := checkKafka(t, s, brokers, topic)
			if !rep.OK() || rep.Committed != 60 || rep.Dup != 0 {
				t.Fatalf("%s: %s", source, rep)
			}
		})
	}
}

// The relay runs as a child process, killed with SIGKILL at random moments
// while writers keep committing; each restart resumes from the slot.
func TestRelayKilledWithSIGKILLLosesNothing(t *testing.T) {
	if os.Getenv("OUTBOX_CHILD_RELAY") != "" {
		t.Skip("child")
	}
	brokers := testenv.KafkaBrokers(t)
	s, dsn := newDB(t)
	ctx := t.Context()
	slot := fmt.Sprintf("kill_%d", time.Now().UnixNano()%1e9)
	src := cdc(t, s, postgres.CDCConfig{Slot: slot})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	typ := uniqueType(t)
	var wg sync.WaitGroup
	const writers, perWriter = 4, 300
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m, _ := outbox.NewMessage(typ, fmt.Sprintf("a%d", w*10+i%10), "Changed", int64(i/10+1), map[string]int{"i": i})
				err := s.Transact(ctx, func(tx pgx.Tx) error { return s.Append(ctx, tx, m) })
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(11, 11))
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestChildRelay$", "-test.v")
		cmd.Env = append(os.Environ(), "OUTBOX_CHILD_RELAY=1", "CHILD_DSN="+dsn, "CHILD_SLOT="+slot, "CHILD_BROKERS="+strings.Join(brokers, ","))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	for kill := range 4 {
		cmd := start()
		wait := time.Duration(300+rng.IntN(700)) * time.Millisecond
		<-time.After(wait)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d after %s", kill+1, wait)
	}
	wg.Wait()
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	topic := "outbox.event." + typ
	eventually(t, 60*time.Second, "all events on the topic", func() bool {
		rep := checkKafka(t, s, brokers, topic)
		return rep.Lost == 0
	})
	rep := checkKafka(t, s, brokers, topic)
	if !rep.OK() || rep.Committed != writers*perWriter {
		t.Fatalf("after 4 SIGKILLs: %s", rep)
	}
	t.Logf("after 4 SIGKILLs: %s", rep)
}

// TestChildRelay is the child process of the SIGKILL test.
func TestChildRelay(t *testing.T) {
	if os.Getenv("OUTBOX_CHILD_RELAY") == "" {
		t.Skip("only runs as the SIGKILL test's child")
	}
	ctx := context.Background()
	s, err := postgres.Open(ctx, os.Getenv("CHILD_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := s.CDC(postgres.CDCConfig{Slot: os.Getenv("CHILD_SLOT"), StatusInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(src, publisher(t, strings.Split(os.Getenv("CHILD_BROKERS"), ",")), s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(r.Serve(ctx)) // runs until killed
}

// PostgreSQL stopped hard mid-stream: the relay fails, is restarted (as
// its supervisor would) and resumes from its slot once the server is back.
func TestPostgresHardStopRelayResumesFromSlot(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	ctl := testenv.PostgresCtl(t)
	// Whatever happens, leave the server running for the other tests.
	t.Cleanup(func() { exec.Command(ctl, "start").Run() })
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(src, publisher(t, brokers), s, relay.Config{Retry: retry.Policy{MaxAttempts: 3, InitialDelay: 10 * time.Millisecond, Multiplier: 2, MaxDelay: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	supCtx, stopSup := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	var restarts atomic.Int64
	go func() { // a minimal supervisor
		defer close(supDone)
		for supCtx.Err() == nil {
			if err := r.Serve(supCtx); err != nil {
				t.Logf("relay stopped: %v", err)
				restarts.Add(1)
				select {
				case <-supCtx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	defer func() { stopSup(); <-supDone }()
	typ := uniqueType(t)
	write := func(n int) {
		for i := range n {
			m, _ := outbox.NewMessage(typ, fmt.Sprint("a", i%5), "Changed", int64(0), nil)
			m.Sequence = int64(time.Now().UnixNano())
			if err := s.Transact(ctx, func(tx pgx.Tx) error { return s.Append(ctx, tx, m) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(50)
	eventually(t, 30*time.Second, "first events published", func() bool {
		if os.Getenv("DEBUG_STATS") != "" {
			t.Logf("%+v", r.Stats())
		}
		return r.Stats().Published >= 50
	})
	if out, err := exec.Command(ctl, "stop-immediate").CombinedOutput(); err != nil {
		t.Fatalf("stop PostgreSQL: %v %s", err, out)
	}
	eventually(t, 30*time.Second, "relay notices", func() bool { return restarts.Load() > 0 })
	if out, err := exec.Command(ctl, "start").CombinedOutput(); err != nil {
		t.Fatalf("start PostgreSQL: %v %s", err, out)
	}
	eventually(t, 30*time.Second, "store answers again", func() bool { return s.Ping(ctx) == nil })
	write(50)
	eventually(t, 60*time.Second, "all events published after the restart", func() bool {
		rep := checkKafka(t, s, brokers, "outbox.event."+typ)
		return rep.Lost == 0
	})
	rep := checkKafka(t, s, brokers, "outbox.event."+typ)
	if !rep.OK() || rep.Committed != 100 {
		t.Fatalf("after a hard stop: %s", rep)
	}
	t.Logf("relay restarted %d times; %s", restarts.Load(), rep)
}
