package relay_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// These tests run the relay against franz-go's kfake, a real Kafka
// protocol broker in-process, and inject faults by intercepting requests.
// They wait in real time (short breaker timeouts), polling with a ticker.

var eventually = testenv.Eventually

type rig struct {
	t       *testing.T
	broker  *kafka.Embedded
	brokers []string
	prefix  string // topics of this rig's own, on a shared broker
	store   *sqlite.Store
	pub     *kafka.Publisher
	rec     *checker.Recorder
	mu      sync.Mutex
	seq     map[string]int64
	locks   map[string]*sync.Mutex
	topics  map[string]bool
}

func newRig(t *testing.T, pubCfg kafka.Config) *rig {
	t.Helper()
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	// Fault tests see every injected failure at the relay.
	pubCfg.RecordRetries = kafka.NoRecordRetries
	return newRigOn(t, b, b.Addrs(), pubCfg)
}

// newRigOn runs against brokers; broker is the embedded one when faults
// are to be injected, nil for a real broker.
func newRigOn(t *testing.T, b *kafka.Embedded, brokers []string, pubCfg kafka.Config) *rig {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), sqlite.Config{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	pubCfg.Brokers = brokers
	if pubCfg.TopicTemplate == "" {
		pubCfg.TopicTemplate = kafka.TopicPerAggregateType
	}
	p, err := kafka.NewPublisher(pubCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &rig{t: t, broker: b, brokers: brokers, store: s, pub: p, rec: checker.NewRecorder(nil), seq: map[string]int64{}, locks: map[string]*sync.Mutex{}, topics: map[string]bool{}}
}

func (r *rig) source() *countingSource {
	src, err := poll.NewSource(r.store, poll.Config{Interval: 10 * time.Millisecond, Wake: r.store.Wake()})
	if err != nil {
		r.t.Fatal(err)
	}
	return &countingSource{Source: src}
}

// write commits one event. Like a real service, it holds the aggregate
// while it takes the next version and commits, so commit order is version
// order.
func (r *rig) write(aggType, agg string, payload any) outbox.Message {
	r.mu.Lock()
	lock := r.locks[aggType+"/"+agg]
	if lock == nil {
		lock = &sync.Mutex{}
		r.locks[aggType+"/"+agg] = lock
	}
	r.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	r.mu.Lock()
	r.seq[aggType+"/"+agg]++
	seq := r.seq[aggType+"/"+agg]
	r.topics["outbox.event."+r.prefix+aggType] = true
	r.mu.Unlock()
	m, err := outbox.NewMessage(r.prefix+aggType, agg, "Changed", seq, payload)
	if err != nil {
		r.t.Error(err)
		return m
	}
	err = r.store.Transact(context.Background(), func(tx *sql.Tx) error { return r.store.Append(context.Background(), tx, m) })
	if err != nil {
		r.t.Error(err)
		return m
	}
	r.rec.Record(checker.Event{Op: checker.OpCommit, ID: m.ID.String(), Aggregate: m.Key().String(), Sequence: seq})
	return m
}

// check reads every topic from offset 0 and checks the invariants.
func (r *rig) check() checker.Report {
	r.t.Helper()
	r.mu.Lock()
	var topics []string
	for tp := range r.topics {
		topics = append(topics, tp)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafkatest.ReadAll(ctx, r.brokers, topics)
	if err != nil {
		r.t.Fatal(err)
	}
	obs, err := checker.FromKafka(recs)
	if err != nil {
		r.t.Fatal(err)
	}
	return checker.Check(r.rec.History(), obs, deadLetteredIDs(r.t, r.store))
}

func fastRetry() retry.Policy {
	return retry.Policy{MaxAttempts: 5, InitialDelay: 5 * time.Millisecond, Multiplier: 2, MaxDelay: 25 * time.Millisecond}
}

func TestKfakeTransientOutageOpensBreakerStopsReadingAndRecovers(t *testing.T) {
	rg := newRig(t, kafka.Config{})
	for i := range 20 {
		rg.write("order", fmt.Sprintf("o%d", i%4), i)
	}
	var down atomic.Bool
	down.Store(true)
	var failed atomic.Int64
	rg.broker.Cluster().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		rg.broker.Cluster().KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		failed.Add(1)
		return kafkatest.FailProduce(req, kerr.NotEnoughReplicas.Code), nil, true
	})
	src := rg.source()
	log := &transitionLog{src: src}
	pub := &countingPublisher{Publisher: rg.pub}
	log.failures = pub.failures.Load
	r, err := relay.New(src, pub, rg.store, relay.Config{
		Retry:   fastRetry(),
		Breaker: breaker.Config{OpenTimeout: 400 * time.Millisecond},
		Hooks:   []relay.Hook{log},
		// One publish at a time, so the failures counted when the breaker
		// opens are the ones it heard: with a worker per aggregate a
		// publish in flight elsewhere could fail before it recorded the
		// fifth (2 runs in 30 counted 6).
		Workers: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	eventually(t, 10*time.Second, "breaker opens", func() bool { return len(log.all()) > 0 })
	opened := log.all()[0]
	if opened.to != "open" {
		t.Fatalf("first transition to %s, want open", opened.to)
	}
	if n := opened.failures; n != 5 {
		t.Fatalf("breaker opened after %d failed publishes, want 5", n)
	}
	// While open, nobody writes to the broker and the relay reads nothing.
	eventually(t, 10*time.Second, "breaker half-opens", func() bool { return len(log.all()) > 1 })
	halfOpen := log.all()[1]
	if halfOpen.to != "half-open" || halfOpen.at.Sub(opened.at) < 400*time.Millisecond {
		t.Fatalf("second transition %+v, want half-open after 400ms", halfOpen)
	}
	if reads := halfOpen.reads - opened.reads; reads > 1 {
		t.Fatalf("relay read the source %d times while the breaker was open", reads)
	}
	down.Store(false)
	eventually(t, 10*time.Second, "breaker closes", func() bool { return r.Stats().Breaker == "closed" && r.Stats().Published == 20 })
	if st := r.Stats(); st.DeadLettered != 0 || st.Retried == 0 {
		t.Fatalf("stats %+v: transient failures must be retried and never dead-lettered", st)
	}
	rep := rg.check()
	if !rep.OK() || rep.DeadLettered != 0 || rep.Lost != 0 {
		t.Fatalf("invariants broken: %s", rep)
	}
	t.Logf("%d produce requests failed; %s", failed.Load(), rep)
}

// countingPublisher counts failed publishes, which is what the breaker
// counts (franz-go may carry several in one produce request).
type countingPublisher struct {
	outbox.Publisher
	failures atomic.Int64
}

func (p *countingPublisher) Publish(ctx context.Context, m outbox.Message) error {
	err := p.Publisher.Publish(ctx, m)
	if err != nil {
		p.failures.Add(1)
	}
	return err
}

func TestKfakePermanentFailuresParkOnlyTheirAggregateAndReplayRestoresOrder(t *testing.T) {
	rg := newRig(t, kafka.Config{MaxRecordBytes: 4096})
	deny := rg.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.invoice", Err: kerr.PolicyViolation, Count: -1})
	r, err := relay.New(rg.source(), rg.pub, rg.store, relay.Config{Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	var big outbox.Message
	for i := range 10 {
		rg.write("order", fmt.Sprintf("o%d", i%5), i)
		rg.write("invoice", "i1", i) // every invoice event is refused
		if i == 3 {
			big = rg.write("order", "o-big", strings.Repeat("x", 8192)) // too large, forever
		}
		if i > 3 {
			rg.write("order", "o-big", i) // parked behind it
		}
	}
	eventually(t, 10*time.Second, "orders published and failures parked", func() bool {
		st := r.Stats()
		return st.Published == 10 && st.DeadLettered == 10+7
	})
	if st := r.Stats(); st.Parked != 2 || st.Breaker != "closed" {
		t.Fatalf("stats %+v: two aggregates parked, breaker closed", st)
	}
	if rep := rg.check(); !rep.OK() || rep.DeadLettered != 17 {
		t.Fatalf("while parked: %s", rep)
	}
	// The policy is changed: replay the invoices; skip the oversized order.
	deny.Remove()
	if _, err := dlq.Request(t.Context(), rg.store, outbox.AggregateKey{Type: "invoice", ID: "i1"}, outbox.ActionReplay, dlq.RequestOptions{Reason: "policy changed"}); err != nil {
		t.Fatal(err)
	}
	plan, err := dlq.Request(t.Context(), rg.store, big.Key(), outbox.ActionSkip, dlq.RequestOptions{Reason: "payload too large"})
	if err != nil || plan.Skip[0].Message.ID != big.ID || len(plan.Republish) != 6 {
		t.Fatalf("skip plan %+v %v", plan, err)
	}
	r.Poke()
	eventually(t, 10*time.Second, "aggregates released", func() bool { return r.Stats().Parked == 0 })
	rg.write("invoice", "i1", "after")
	rg.write("order", "o-big", "after")
	eventually(t, 10*time.Second, "new events flow", func() bool { return r.Stats().Published == 10+10+6+2 })
	rep := rg.check()
	if !rep.OK() || rep.DeadLettered != 1 || rep.Dup != 0 {
		t.Fatalf("after replay and skip: %s", rep)
	}
}

// The relay is cut off mid-stream three times, its last checkpoints
// dropped as if the process was killed, and restarted from the store.
func TestKfakeAbruptStopAndRestartFromCheckpointLosesNothing(t *testing.T) {
	testAbruptStops(t, newRig(t, kafka.Config{}))
}

// The same on Apache Kafka: no fault injection, real acknowledgements.
func TestApacheKafkaAbruptStopAndRestartFromCheckpointLosesNothing(t *testing.T) {
	rg := newRigOn(t, nil, testenv.KafkaBrokers(t), kafka.Config{})
	rg.prefix = fmt.Sprintf("r%d", time.Now().UnixNano())
	testAbruptStops(t, rg)
}

func testAbruptStops(t *testing.T, rg *rig) {
	var wg sync.WaitGroup
	const writers, perWriter = 4, 250
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				rg.write("order", fmt.Sprintf("o%d", (w*perWriter+i)%50), i)
			}
		})
	}
	written := make(chan struct{})
	go func() { wg.Wait(); close(written) }()
	rng := rand.New(rand.NewPCG(7, 7))
	var restarts int
	for ; ; restarts++ {
		crashed := make(chan struct{})
		r, err := relay.New(&crashingSource{Source: rg.source(), crashed: crashed}, rg.pub, rg.store, relay.Config{DrainTimeout: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		stop := serve(t, r)
		if restarts == 3 {
			wg.Wait()
			eventually(t, 30*time.Second, "final relay drains", func() bool {
				n, _ := rg.store.Backlog(t.Context(), "default")
				return n == 0
			})
			stop()
			break
		}
		// Progress: some events published, or all of them (an earlier
		// relay may have published nearly everything written).
		step := 50 + rng.Int64N(200)
		eventually(t, 30*time.Second, "relay makes progress", func() bool {
			if r.Stats().Published >= step {
				return true
			}
			select {
			case <-written:
				n, _ := rg.store.Backlog(t.Context(), "default")
				return n == 0
			default:
				return false
			}
		})
		close(crashed)
		stop()
	}
	rep := rg.check()
	if !rep.OK() || rep.Committed != writers*perWriter {
		t.Fatalf("after %d abrupt stops: %s", restarts, rep)
	}
	t.Logf("after %d abrupt stops: %s", restarts, rep)
}
