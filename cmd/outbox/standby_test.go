package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// runRelay runs `outbox relay args...` in this process until stop.
func runRelay(t *testing.T, args ...string) (logs *lockedBuffer, stop func() int) {
	t.Helper()
	logs = &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- run(ctx, append([]string{"relay"}, args...), logs, logs) }()
	var once bool
	var c int
	stop = func() int {
		if !once {
			once = true
			cancel()
			c = <-code
		}
		return c
	}
	t.Cleanup(func() { stop() })
	return logs, stop
}

// appendFn commits one event of aggregate agg with sequence seq.
type appendFn func(agg string, seq int64) (outbox.Message, error)

// twoRelaysOneStore runs the R11 case in process: two relays on one
// store publish each event once; when the active one stops, the standby
// takes over within seconds and nothing is lost. Which one is active is
// not decided by which started first: "relaying" is logged before the
// source is opened, so the second can open it first on a busy machine.
func twoRelaysOneStore(t *testing.T, store, source string, appendEvent appendFn) {
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	args := []string{"--store", store, "--brokers", broker.Addrs()[0], "--topic-template", "events", "--poll-interval", "10ms"}
	if source != "" {
		args = append(args, "--source", source)
	}
	logsA, stopA := runRelay(t, args...)
	testenv.Eventually(t, 20*time.Second, "the first relay starts", func() bool { return strings.Contains(logsA.String(), "relaying") })
	logsB, stopB := runRelay(t, args...)
	testenv.Eventually(t, 20*time.Second, "one relay says it is a standby", func() bool {
		return strings.Contains(logsA.String(), "standby") || strings.Contains(logsB.String(), "standby")
	})
	active, standby, stopActive, stopStandby := logsA, logsB, stopA, stopB
	if strings.Contains(logsA.String(), "standby") {
		active, standby, stopActive, stopStandby = logsB, logsA, stopB, stopA
	}

	var history []checker.Event
	write := func(from, to int) {
		for i := from; i < to; i++ {
			m, err := appendEvent(fmt.Sprintf("o%d", i%10), int64(i/10+1))
			if err != nil {
				t.Fatal(err)
			}
			history = append(history, checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: m.Sequence})
		}
	}
	check := func(want int) checker.Report {
		var rep checker.Report
		testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d events published", want), func() bool {
			recs, err := kafkatest.ReadAll(t.Context(), broker.Addrs(), []string{"events"})
			if err != nil {
				return false
			}
			obs, err := checker.FromKafka(recs)
			if err != nil {
				t.Fatal(err)
			}
			rep = checker.Check(history, obs, nil)
			return rep.Lost == 0
		})
		return rep
	}
	write(0, 300)
	if rep := check(300); !rep.OK() || rep.Dup != 0 {
		t.Fatalf("two relays live: %s; want each event once\nactive:\n%s\nstandby:\n%s", rep, active, standby)
	}
	if strings.Contains(active.String(), "standby") || strings.Count(standby.String(), "standby") != 1 {
		t.Fatalf("want one active and the other a standby that says so once\nactive:\n%s\nstandby:\n%s", active, standby)
	}
	if strings.Contains(standby.String(), "took over") {
		t.Fatalf("the standby says it took over while the active relay lives\n%s", standby)
	}
	stopped := time.Now()
	if c := stopActive(); c != 0 {
		t.Fatalf("the active relay exited %d", c)
	}
	testenv.Eventually(t, 10*time.Second, "the standby takes over", func() bool { return strings.Contains(standby.String(), "took over") })
	t.Logf("took over %s after the active relay stopped", time.Since(stopped).Round(time.Millisecond))
	write(300, 400)
	if rep := check(400); !rep.OK() {
		t.Fatalf("after the takeover: %s\n%s", rep, standby)
	}
	stopStandby()
}

func TestTwoRelaysOnOneSQLiteFilePublishOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	twoRelaysOneStore(t, "sqlite://"+path, "", func(agg string, seq int64) (outbox.Message, error) {
		m, err := outbox.NewMessage("order", agg, "Changed", seq, seq)
		if err != nil {
			return m, err
		}
		return m, s.Transact(t.Context(), func(tx *sql.Tx) error { return s.Append(t.Context(), tx, m) })
	})
}

func TestTwoRelaysOnOnePostgresOutbox(t *testing.T) {
	for _, source := range []string{"poll", "cdc"} {
		t.Run(source, func(t *testing.T) {
			dsn := testenv.PostgresDatabase(t)
			s, err := postgres.Open(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			if source == "cdc" { // the slot exists before the first write, as outbox migrate does
				src, _ := s.CDC(postgres.CDCConfig{})
				if _, err := src.Setup(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			twoRelaysOneStore(t, dsn, source, func(agg string, seq int64) (outbox.Message, error) {
				m, err := outbox.NewMessage("order", agg, "Changed", seq, seq)
				if err != nil {
					return m, err
				}
				return m, s.Transact(t.Context(), func(tx pgx.Tx) error { return s.Append(t.Context(), tx, m) })
			})
		})
	}
}

func TestRelayNeedsBrokersAndSaysWhatItRelays(t *testing.T) {
	var out lockedBuffer
	if code := run(t.Context(), []string{"relay", "--store", "sqlite://" + filepath.Join(t.TempDir(), "x.db")}, &out, &out); code != 2 ||
		!strings.Contains(out.String(), "--brokers") {
		t.Fatalf("relay without --brokers: exit %d\n%s\nwant 2 and a message naming --brokers", code, out.String())
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	path := filepath.Join(t.TempDir(), "y.db")
	logs, stop := runRelay(t, "--store", "sqlite://"+path, "--brokers", broker.Addrs()[0])
	testenv.Eventually(t, 20*time.Second, "the start line", func() bool { return strings.Contains(logs.String(), "relaying") })
	line := logs.String()
	for _, want := range []string{"from=sqlite://" + path, "source=poll", "to=" + broker.Addrs()[0], "topics=outbox.event.{aggregatetype}"} {
		if !strings.Contains(line, want) {
			t.Errorf("start line lacks %q:\n%s", want, line)
		}
	}
	// Its shutdown, without --http: no API to stop.
	if code := stop(); code != 0 {
		t.Fatalf("relay exited %d:\n%s", code, logs)
	}
	got := logs.String()
	if i, j := strings.Index(got, `msg="shutting down: stopping the relay and its workers"`), strings.Index(got, "msg=stopped took="); i < 0 || j < i ||
		strings.Contains(got, "API") {
		t.Errorf("relay's shutdown log (want the relay and its workers stopping, then stopped, and no API):\n%s", got)
	}
}
