package scylla_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/scyllaemu"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
	"github.com/outbox-dev/outbox/store/storetest"
	"github.com/outbox-dev/outbox/supervise"
)

// The cases a review of the CDC path named as ways to lose events, each
// run through the real reader (scylla-cdc-go) on the cluster.

func open(t *testing.T, src outbox.Source) outbox.Cursor {
	t.Helper()
	cur, err := src.Open(t.Context())
	if err != nil {
		t.Fatalf("open the CDC source: %v", err)
	}
	t.Cleanup(func() { cur.Close() })
	return cur
}

// readN reads until n records arrived, failing after limit.
func readN(t *testing.T, cur outbox.Cursor, n int, limit time.Duration) []outbox.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	var got []outbox.Record
	for len(got) < n {
		recs, err := cur.Next(ctx, n-len(got))
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		got = append(got, recs...)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records within %s: %s", len(got), n, limit, ids(got))
		}
	}
	return got
}

// readAcked reads like readN and acknowledges what it reads, as the relay
// does: a generation's readers end only once their events are
// acknowledged, and the history read here may span generations.
func readAcked(t *testing.T, cur outbox.Cursor, n int, limit time.Duration) []outbox.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	var got []outbox.Record
	for len(got) < n {
		recs, err := cur.Next(ctx, n-len(got))
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if len(recs) > 0 {
			if err := cur.Commit(ctx, recs[len(recs)-1].Position); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
		got = append(got, recs...)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records within %s: %s", len(got), n, limit, ids(got))
		}
	}
	return got
}

// quiet fails if cur hands over anything within d.
func quiet(t *testing.T, cur outbox.Cursor, d time.Duration, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	for ctx.Err() == nil {
		recs, err := cur.Next(ctx, 10)
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if len(recs) > 0 {
			t.Fatalf("%s, yet %s was handed over", why, ids(recs))
		}
	}
}

func ids(recs []outbox.Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, fmt.Sprintf("%s#%d", r.Message.AggregateID, r.Message.Sequence))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func wantIDs(t *testing.T, got []outbox.Record, want ...outbox.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %s, want %d records", ids(got), len(want))
	}
	for i := range want {
		if got[i].Message.ID != want[i].ID {
			t.Fatalf("record %d is %s, want %s#%d (got %s)", i, ids(got[i:i+1]), want[i].AggregateID, want[i].Sequence, ids(got))
		}
	}
}

// A LOGGED BATCH of several events of one aggregate is one CDC change:
// one cdc$time, which is all the library's progress can name. A restart
// after the relay acknowledged part of it must read all of it again.
func TestScyllaHalfAcknowledgedChangeIsReadAgainAfterARestart(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	src := s.CDC(scylla.LowLatency())
	batch := []outbox.Message{storetest.Msg(t, "a", 1), storetest.Msg(t, "a", 2), storetest.Msg(t, "a", 3)}
	if err := s.AppendEvents(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	cur := open(t, src)
	got := readN(t, cur, 3, 30*time.Second)
	wantIDs(t, got, batch...)
	if err := cur.Commit(ctx, got[0].Position); err != nil { // the broker acknowledged the first only
		t.Fatal(err)
	}
	cur.Close()

	cur = open(t, src)
	again := readN(t, cur, 3, 30*time.Second)
	wantIDs(t, again, batch...)
	if err := cur.Commit(ctx, again[2].Position); err != nil {
		t.Fatal(err)
	}
	cur.Close()

	// Once the whole change is acknowledged, a restart reads only what is new.
	next := storetest.Msg(t, "a", 4)
	if err := s.AppendEvents(ctx, next); err != nil {
		t.Fatal(err)
	}
	cur = open(t, src)
	wantIDs(t, readN(t, cur, 1, 30*time.Second), next)
}

// ScyllaDB starts a new CDC generation (new streams) when its topology
// changes. A stream's consumer must not end while its events are
// unacknowledged, or the library would start the next generation and the
// saved progress would pass them.
func TestScyllaGenerationSwitchWaitsForTheOldGenerationsAcknowledgements(t *testing.T) {
	// Not parallel: generations are cluster-wide, and the switch would
	// slow the other tests' readers.
	s := cluster(t)
	emulated(t, s, "ScyllaDB switches generations only when its topology changes")
	ctx := t.Context()
	cfg := scylla.LowLatency()
	cfg.GenerationPoll = time.Second
	src := s.CDC(cfg)

	a1 := storetest.Msg(t, "a", 1)
	if err := s.AppendEvents(ctx, a1); err != nil {
		t.Fatal(err)
	}
	cur := open(t, src)
	wantIDs(t, readN(t, cur, 1, 30*time.Second), a1) // and never acknowledged

	// ScyllaDB dates a new generation a little ahead, so every node knows
	// it before it applies.
	switchAt := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	if err := scyllaemu.NewGeneration(ctx, s.Session(), switchAt, scyllaemu.DefaultTopology); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the new generation starts", func() bool { return time.Now().After(switchAt) })
	a2, b1 := storetest.Msg(t, "a", 2), storetest.Msg(t, "b", 1)
	for _, m := range []outbox.Message{a2, b1} {
		if err := s.AppendEvents(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	streams := generationStreams(t, s, switchAt)
	for _, m := range []outbox.Message{a1, a2, b1} {
		inNew := streams[string(logStream(t, s, m))]
		if inNew != (m.ID != a1.ID) {
			t.Fatalf("%s#%d logged in the new generation: %v", m.AggregateID, m.Sequence, inNew)
		}
	}
	// Past the confidence window and a generation poll, with slack.
	quiet(t, cur, 6*time.Second, "a1 of the old generation is unacknowledged")

	// A restart now: closing must not have saved the new generation
	// (which would pass a1); a1 is read again, then the new generation's
	// events, once a1 is acknowledged.
	cur.Close()
	if saved := savedGeneration(t, s); !saved.Before(switchAt) {
		t.Fatalf("closing the cursor saved generation %v while a1 of the old one was unacknowledged", saved)
	}
	cur = open(t, src)
	got := readN(t, cur, 1, 30*time.Second)
	wantIDs(t, got, a1)
	quiet(t, cur, 4*time.Second, "a1 is still unacknowledged after the restart")
	if err := cur.Commit(ctx, got[0].Position); err != nil {
		t.Fatal(err)
	}
	got = readN(t, cur, 2, 30*time.Second)
	if err := cur.Commit(ctx, got[1].Position); err != nil {
		t.Fatal(err)
	}
	seen := map[uuid.UUID]bool{got[0].Message.ID: true, got[1].Message.ID: true}
	if !seen[a2.ID] || !seen[b1.ID] {
		t.Fatalf("after the switch read %s, want a#2 and b#1", ids(got))
	}
	if saved := savedGeneration(t, s); !saved.Equal(switchAt) {
		t.Fatalf("saved generation %v, want the new one, %v", saved, switchAt)
	}
	cur.Close()

	a3 := storetest.Msg(t, "a", 3)
	if err := s.AppendEvents(ctx, a3); err != nil {
		t.Fatal(err)
	}
	cur = open(t, src)
	wantIDs(t, readN(t, cur, 1, 30*time.Second), a3)
}

func keyspace(s *scylla.Store) string { return s.Keyspace() }

// savedGeneration is the CDC generation the relay resumes from.
func savedGeneration(t *testing.T, s *scylla.Store) time.Time {
	t.Helper()
	var saved time.Time
	if err := s.Session().Query(`SELECT generation FROM `+keyspace(s)+`.outbox_cdc_generation WHERE name = ?`,
		keyspace(s)+".outbox_messages").Scan(&saved); err != nil {
		t.Fatalf("saved generation: %v", err)
	}
	return saved
}

// generationStreams are the stream ids of the generation starting at at.
func generationStreams(t *testing.T, s *scylla.Store, at time.Time) map[string]bool {
	t.Helper()
	iter := s.Session().Query(`SELECT streams FROM `+scyllaemu.Keyspace+`.cdc_streams_descriptions_v2 WHERE time = ?`, at).Iter()
	out := map[string]bool{}
	var streams [][]byte
	for iter.Scan(&streams) {
		for _, id := range streams {
			out[string(id)] = true
		}
	}
	if err := iter.Close(); err != nil || len(out) == 0 {
		t.Fatalf("streams of generation %v: %d, %v", at, len(out), err)
	}
	return out
}

// logStream is the stream m's insert was logged in.
func logStream(t *testing.T, s *scylla.Store, m outbox.Message) []byte {
	t.Helper()
	iter := s.Session().Query(`SELECT "cdc$stream_id", id FROM ` + keyspace(s) + `.outbox_messages_scylla_cdc_log`).Iter()
	var stream []byte
	var id gocql.UUID
	for iter.Scan(&stream, &id) {
		if id == gocql.UUID(m.ID) {
			iter.Close()
			return stream
		}
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("%s#%d is not in the CDC log", m.AggregateID, m.Sequence)
	return nil
}

// On its first start on a table the reader must read what the log holds,
// however old: the library's default looks back one minute only.
func TestScyllaFirstStartReadsHistoryOlderThanAMinute(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	old := []outbox.Message{storetest.Msg(t, "a", 1), storetest.Msg(t, "b", 1), storetest.Msg(t, "a", 2)}
	if err := s.AppendEventsAt(ctx, time.Now().Add(-3*time.Minute), old...); err != nil {
		t.Fatal(err)
	}
	fresh := storetest.Msg(t, "a", 3)
	if err := s.AppendEvents(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	cur := open(t, s.CDC(scylla.LowLatency()))
	got := readAcked(t, cur, 4, time.Minute)
	seqs := map[string][]int64{}
	for _, r := range got {
		seqs[r.Message.AggregateID] = append(seqs[r.Message.AggregateID], r.Message.Sequence)
	}
	if fmt.Sprint(seqs["a"]) != "[1 2 3]" || fmt.Sprint(seqs["b"]) != "[1]" {
		t.Fatalf("first start read %s, want a#1..3 in order and b#1", ids(got))
	}
}

// A write in flight as a relay first starts carries its LWT's ballot, a
// moment older than the oldest change the relay sees in the log; it lands
// after the start and must be read, not passed over (chaos R13 once lost
// three orders' first events that way).
func TestScyllaFirstStartReadsAWriteInFlightOlderThanTheOldestChange(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	// The in-flight write's timestamp: its LWT's ballot, as old as a write
	// may be and still count (EventWriteDeadline, 5 s by default).
	sent := time.Now().Add(-5 * time.Second)
	landed := storetest.Msg(t, "a", 1)
	if err := s.AppendEventsAt(ctx, time.Now(), landed); err != nil {
		t.Fatal(err)
	}
	// The default confidence window (10 s) leaves the reader that long
	// behind the present: it reaches sent only 5 s from now.
	cur := open(t, s.CDC(scylla.CDCConfig{}))
	late := storetest.Msg(t, "b", 1)
	if err := s.AppendEventsAt(ctx, sent, late); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(sent); took > 9*time.Second {
		t.Skipf("the write landed %s after its timestamp: too late for this test's point", took)
	}
	got := readAcked(t, cur, 2, time.Minute)
	if ids(got) != ids([]outbox.Record{{Message: late}, {Message: landed}}) && ids(got) != ids([]outbox.Record{{Message: landed}, {Message: late}}) {
		t.Fatalf("first start read %s, want both the event that landed first and the one in flight", ids(got))
	}
}

// syncBuffer is a log destination tests read while the relay writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An explicit start point (from= in the URL) reads from there on the
// first start, and says, as an error, what it passes over: the changes
// before it and the outbox rows written before it.
func TestScyllaFirstStartFromAnExplicitPointSaysWhatItSkips(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	now := time.Now()
	skipped := []outbox.Message{storetest.Msg(t, "a", 1), storetest.Msg(t, "b", 1)}
	if err := s.AppendEventsAt(ctx, now.Add(-3*time.Minute), skipped...); err != nil {
		t.Fatal(err)
	}
	a2, a3 := storetest.Msg(t, "a", 2), storetest.Msg(t, "a", 3)
	if err := s.AppendEventsAt(ctx, now.Add(-90*time.Second), a2); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, a3); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := scylla.LowLatency()
	cfg.From = now.Add(-2 * time.Minute)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cur := open(t, s.CDC(cfg))
	wantIDs(t, readAcked(t, cur, 2, time.Minute), a2, a3)
	quiet(t, cur, 3*time.Second, "the changes before from= are not to be read")
	out := logs.String()
	for _, want := range []string{"changes in the CDC log before it are NOT published", "rows=2"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the relay's log does not say %q:\n%s", want, out)
		}
	}
	t.Logf("the relay said:\n%s", out)
}

// A row the consumer cannot decode reaches the relay as a record it
// dead-letters, with the raw columns, parking its aggregate (the same
// aggregate's later event follows it into the dead-letter store, in
// order); the reader goes on, because returning an error would stop it,
// every stream with it.
func TestScyllaUndecodableRowIsDeadLetteredAndTheReaderGoesOn(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	a1, a3, b1 := storetest.Msg(t, "a", 1), storetest.Msg(t, "a", 3), storetest.Msg(t, "b", 1)
	if err := s.AppendEvents(ctx, a1); err != nil {
		t.Fatal(err)
	}
	// Another writer's row: its payload is not JSON.
	if err := s.Session().Query(`INSERT INTO ` + keyspace(s) + `.outbox_messages
		(aggregatetype, aggregateid, sequence, event_time, id, type, payload, timestamp) VALUES ('order', 'a', 2, now(), uuid(), 'Broken', 'not json', 0)`).
		Exec(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []outbox.Message{a3, b1} {
		if err := s.AppendEvents(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	src := s.CDC(scylla.LowLatency())
	pub := &recorder{}
	r, err := relay.New(src, pub, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, r)
	testenv.Eventually(t, 30*time.Second, "a#1 and b#1 published, the bad row and a#3 dead-lettered", func() bool {
		return pub.count() == 2 && r.Stats().DeadLettered == 2
	})
	parked, err := s.ParkedMessages(ctx, outbox.AggregateKey{Type: "order", ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 2 || parked[0].Message.Sequence != 2 || parked[1].Message.ID != a3.ID ||
		!strings.Contains(parked[0].Error, "could not decode") || !strings.Contains(string(parked[0].Message.Payload), `"payload":"not json"`) {
		t.Fatalf("parked %+v, want the bad row (its raw columns as the payload) and a#3 behind it", parked)
	}
	if n := src.Undecodable(); n != 1 {
		t.Fatalf("Undecodable() = %d, want 1", n)
	}
	b2 := storetest.Msg(t, "b", 2)
	if err := s.AppendEvents(ctx, b2); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "b#2 published: the reader is still running", func() bool { return pub.count() == 3 })
}

// gatedRecorder records what is published; while its gate is closed a
// publish waits, as one does on a broker that stopped answering.
type gatedRecorder struct {
	recorder
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	waiting atomic.Int32
}

func (g *gatedRecorder) close() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedRecorder) open() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

func (g *gatedRecorder) Publish(ctx context.Context, m outbox.Message) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		g.waiting.Add(1)
		defer g.waiting.Add(-1)
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.recorder.Publish(ctx, m)
}

func (r *recorder) ids() map[uuid.UUID]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uuid.UUID]bool{}
	for _, m := range r.got {
		out[m.ID] = true
	}
	return out
}

// A relay that stalls (its lease renewals stop while publishes hang)
// loses its lease; a standby takes over and publishes what the stalled
// one had in hand, then what comes next. The stalled relay stops the
// moment its lease runs out: it hands out no record read after that, and
// what it publishes late is only what it had in flight then.
func TestScyllaARelayThatLostItsLeaseStopsPublishing(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	source := func(owner string) *scylla.Source {
		cfg := scylla.LowLatency()
		cfg.LeaseTTL, cfg.Owner = 2*time.Second, owner
		return s.CDC(cfg)
	}
	batch := func(prefix string) []outbox.Message {
		var msgs []outbox.Message
		for i := range 5 {
			m := storetest.Msg(t, fmt.Sprintf("%s%d", prefix, i), 1)
			if err := s.AppendEvents(ctx, m); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		}
		return msgs
	}
	srcA, pubA := source("relay-a"), &gatedRecorder{}
	relayA, err := relay.New(srcA, pubA, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stopA := testenv.Serve(t, relayA)
	batch("x")
	testenv.Eventually(t, 30*time.Second, "relay A publishes x0..x4", func() bool { return pubA.count() == 5 })

	// A stalls: its publishes hang on y0..y4, then its renewals stop.
	pubA.close()
	ys := batch("y")
	testenv.Eventually(t, 30*time.Second, "relay A has y0..y4 in flight", func() bool { return pubA.waiting.Load() == 5 })
	srcA.HoldLeaseRenewals(true)

	pubB := &recorder{}
	relayB, err := relay.New(source("relay-b"), pubB, s, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, relayB)
	testenv.Eventually(t, 30*time.Second, "relay B takes over and publishes y0..y4", func() bool {
		got := pubB.ids()
		for _, m := range ys {
			if !got[m.ID] {
				return false
			}
		}
		return true
	})
	zs := batch("z")
	testenv.Eventually(t, 30*time.Second, "relay B publishes z0..z4", func() bool {
		got := pubB.ids()
		for _, m := range zs {
			if !got[m.ID] {
				return false
			}
		}
		return true
	})
	// A wakes up: what it had in flight may go out now, nothing else.
	pubA.open()
	if err := stopA(); !errors.Is(err, scylla.ErrLeaseLost) {
		t.Fatalf("relay A ended with %v, want ErrLeaseLost", err)
	}
	late := 0
	gotA := pubA.ids()
	for _, m := range zs {
		if gotA[m.ID] {
			t.Fatalf("relay A published %s#%d, read after its lease was lost", m.AggregateID, m.Sequence)
		}
	}
	for _, m := range ys {
		if gotA[m.ID] {
			late++
		}
	}
	t.Logf("relay A published %d of its 5 in-flight records after losing its lease (the bounded overlap); relay B published %d", late, pubB.count())
}

// The relay is killed with SIGKILL while events flow, three times, and
// restarted each time (a new process, so it takes the lease over once it
// expires): every committed event reaches Kafka, none that was not, each
// aggregate's in order.
func TestScyllaRelayKilledMidStream(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs relay processes")
	}
	s := cluster(t)
	brokers := testenv.KafkaBrokers(t)
	ctx := t.Context()
	ks := keyspace(s)
	template := "scyllakill-" + ks + ".{aggregatetype}"
	spec := strings.Join([]string{strings.Join(scyllaHosts(t), ","), ks, strings.Join(brokers, ","), template}, "|")
	var child *exec.Cmd
	var childOut strings.Builder
	start := func() {
		child = exec.Command(os.Args[0], "-test.run=^TestScyllaRelayChild$", "-test.v")
		child.Env = append(os.Environ(), "OUTBOX_SCYLLA_RELAY_CHILD="+spec)
		child.Stdout, child.Stderr = &childOut, &childOut
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if child != nil {
			child.Process.Kill()
			child.Wait()
		}
	})
	topic := "scyllakill-" + ks + ".order"
	published := func() []kafkatest.Received {
		recs, err := kafkatest.ReadAll(ctx, brokers, []string{topic})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}

	// Writers: 8 aggregates, batches of 1 to 3 events, until told to stop.
	var (
		mu        sync.Mutex
		committed []checker.Event
		writeErr  error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			seq := map[string]int64{}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				agg := fmt.Sprintf("w%d-%d", w, rng.IntN(2))
				var batch []outbox.Message
				for range 1 + rng.IntN(3) {
					seq[agg]++
					batch = append(batch, storetest.Msg(t, agg, seq[agg]))
				}
				err := s.AppendEvents(ctx, batch...)
				mu.Lock()
				if err != nil && writeErr == nil {
					writeErr = err
				}
				for _, m := range batch {
					if err == nil {
						committed = append(committed, checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: m.Sequence})
					}
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}

	// waitFor polls the topic (ReadAll is too heavy for Eventually's pace).
	waitFor := func(limit time.Duration, what string, cond func(n int) bool) {
		t.Helper()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(limit)
		for !cond(len(published())) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s\nrelay output:\n%s", what, limit, childOut.String())
			}
			<-tick.C
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start()
	for kill := range 3 {
		restarted, before := time.Now(), len(published())
		waitFor(time.Minute, fmt.Sprintf("relay %d publishes", kill+1), func(n int) bool { return n > before })
		recovered := time.Since(restarted)
		// Mid-stream: after this relay has published a while.
		target := before + 50 + rng.IntN(150)
		waitFor(time.Minute, fmt.Sprintf("relay %d publishes %d", kill+1, target), func(n int) bool { return n >= target })
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		t.Logf("kill %d: SIGKILL with %d records in the topic; this relay published its first %s after it started (lease takeover included)",
			kill+1, len(published()), recovered.Round(time.Millisecond))
		start()
	}
	close(stop)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	mu.Lock()
	history := committed
	mu.Unlock()
	var report checker.Report
	testenv.Eventually(t, 2*time.Minute, "every committed event in Kafka", func() bool {
		observed, err := checker.FromKafka(published())
		if err != nil {
			t.Fatal(err)
		}
		report = checker.Check(history, observed, nil)
		return report.Lost == 0
	})
	t.Logf("after 3 SIGKILLs: %s", report)
	if !report.OK() {
		t.Fatalf("%s\nrelay output:\n%s", report, childOut.String())
	}
}

// TestScyllaRelayChild is the relay process TestScyllaRelayKilledMidStream
// kills; it runs only when that test starts it.
func TestScyllaRelayChild(t *testing.T) {
	spec := os.Getenv("OUTBOX_SCYLLA_RELAY_CHILD")
	if spec == "" {
		t.Skip("started by TestScyllaRelayKilledMidStream")
	}
	parts := strings.Split(spec, "|")
	s, err := scylla.Open(scylla.Config{Hosts: strings.Split(parts[0], ","), Keyspace: parts[1], Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: strings.Split(parts[2], ","), TopicTemplate: parts[3]})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := scylla.LowLatency()
	cfg.LeaseTTL = 2 * time.Second
	cfg.Logger = log
	r, err := relay.New(s.CDC(cfg), pub, s, relay.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Until the killed relay's lease expires, opening the source waits as
	// a standby; the supervision tree restarts the relay after a lost
	// lease, as in outbox serve.
	tree := supervise.New(supervise.Config{RestartBackoff: 200 * time.Millisecond, Logger: log})
	tree.Add("relay", r)
	t.Fatal(tree.Serve(context.Background()))
}

// TestScyllaCDCBacklogIsTheLogPastSavedProgress: with no relay running,
// the backlog is what the log holds past the saved progress: all of it
// before a first start, nothing once a relay acknowledged every change and
// closed, then what was written since, with the time of its oldest.
func TestScyllaCDCBacklogIsTheLogPastSavedProgress(t *testing.T) {
	t.Parallel()
	s := cluster(t)
	ctx := t.Context()
	backlog := func(want int64, after time.Time) {
		t.Helper()
		rows, oldest, err := s.CDCBacklog(ctx)
		if err != nil || rows != want {
			t.Fatalf("CDC backlog: %d rows (%v), want %d", rows, err, want)
		}
		// cdc$time is the write's timestamp, this clock's (the driver's).
		if want > 0 && (oldest.Before(after.Add(-time.Millisecond)) || oldest.After(time.Now())) {
			t.Fatalf("oldest change of the backlog at %s, want after %s", oldest.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
		}
	}
	backlog(0, time.Time{})
	start := time.Now()
	first := []outbox.Message{storetest.Msg(t, "a", 1), storetest.Msg(t, "a", 2), storetest.Msg(t, "a", 3)}
	if err := s.AppendEvents(ctx, first...); err != nil { // one change of three rows
		t.Fatal(err)
	}
	for _, agg := range []string{"b", "c"} {
		if err := s.AppendEvents(ctx, storetest.Msg(t, agg, 1)); err != nil {
			t.Fatal(err)
		}
	}
	backlog(5, start)

	cur := open(t, s.CDC(scylla.LowLatency()))
	readAcked(t, cur, 5, 30*time.Second)
	cur.Close() // saves the latest progress
	backlog(0, time.Time{})

	later := time.Now()
	for _, m := range []outbox.Message{storetest.Msg(t, "a", 4), storetest.Msg(t, "d", 1)} {
		if err := s.AppendEvents(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	backlog(2, later)
}
