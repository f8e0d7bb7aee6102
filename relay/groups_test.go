package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
	"github.com/outbox-dev/outbox/store/memstore"
)

// groupCounter counts the publisher's PublishRuns calls and the runs in
// them.
type groupCounter struct {
	*kafka.Publisher
	calls, runs atomic.Int64
}

func (p *groupCounter) PublishRuns(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
	p.calls.Add(1)
	p.runs.Add(int64(len(runs)))
	p.Publisher.PublishRuns(ctx, runs, results)
}

// A backlog over many aggregates goes out many aggregates per attempt,
// not one wait per message, and in order.
func TestABacklogOverManyAggregatesIsPublishedManyAggregatesAtATime(t *testing.T) {
	rg := newRig(t, kafka.Config{})
	const aggregates, each = 1000, 2
	for i := range each {
		for a := range aggregates {
			rg.write("order", fmt.Sprintf("o%d", a), i)
		}
	}
	pub := &groupCounter{Publisher: rg.pub}
	r, err := relay.New(rg.source(), pub, rg.store, relay.Config{Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	eventually(t, 20*time.Second, "the backlog published", func() bool { return r.Stats().Published == aggregates*each })
	if rep := rg.check(); !rep.OK() || rep.Dup != 0 {
		t.Fatalf("%s", rep)
	}
	calls, runs := pub.calls.Load(), pub.runs.Load()
	t.Logf("%d events in %d runs, %d attempts", aggregates*each, runs, calls)
	if calls == 0 || calls > aggregates*each/20 {
		t.Fatalf("%d attempts for %d events over %d aggregates: want at least 20 events an attempt", calls, aggregates*each, aggregates)
	}
}

// One aggregate failing inside a group leaves it: the others of the group,
// and all that come after, are published while it is retried on its own,
// and once the broker takes it, its events follow in order.
func TestAnAggregateFailingInAGroupHoldsUpNoOtherAndKeepsItsOrder(t *testing.T) {
	rg := newRig(t, kafka.Config{})
	// Every produce to the invoice topic fails, transiently, until removed.
	refuse := rg.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.invoice", Err: kerr.NotEnoughReplicas, Count: -1})
	// The invoice's topic exists and was acknowledged once, so its events
	// go out with the others, in groups.
	rg.write("invoice", "warm", 0)
	r, err := relay.New(rg.source(), rg.pub, rg.store, relay.Config{Retry: fastRetry(), StuckTimeout: -1,
		Breaker: breaker.Config{OpenTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	refuse.Remove()
	serve(t, r)
	eventually(t, 10*time.Second, "the invoice topic in use", func() bool { return r.Stats().Published == 1 })
	refuse = rg.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.invoice", Err: kerr.NotEnoughReplicas, Count: -1})
	const orders = 400
	for i := range orders {
		rg.write("order", fmt.Sprintf("o%d", i%100), i)
		if i%40 == 0 {
			rg.write("invoice", "i1", i)
		}
	}
	eventually(t, 20*time.Second, "every order published while the invoice fails", func() bool { return r.Stats().Published == 1+orders })
	if stuck := r.Stuck(); len(stuck) != 1 || stuck[0].Aggregate.ID != "i1" {
		t.Fatalf("stuck %+v: want only i1", stuck)
	}
	refuse.Remove()
	eventually(t, 20*time.Second, "the invoice's events follow", func() bool { return r.Stats().Published == 1+orders+orders/40 })
	if rep := rg.check(); !rep.OK() {
		t.Fatalf("%s", rep)
	}
	if seqs := rg.sequencesOf("invoice", "i1"); !oneToN(seqs, orders/40) {
		t.Fatalf("invoice i1 published as %v, want 1..%d in order", seqs, orders/40)
	}
}

// runsPublisher takes runs of many aggregates at once; the first attempt
// for aggregate agg fails with what first returns.
type runsPublisher struct {
	fakePublisher
	agg   string
	first func(context.Context) error
	tried atomic.Bool
}

func (p *runsPublisher) PublishRuns(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
	for i, run := range runs {
		if run[0].AggregateID == p.agg && p.tried.CompareAndSwap(false, true) {
			results[i] = outbox.RunResult{Err: p.first(ctx)}
			continue
		}
		results[i] = outbox.RunResult{Acked: len(run)}
		for j, m := range run {
			if err := p.Publish(ctx, m); err != nil {
				results[i] = outbox.RunResult{Acked: j, Err: err}
				break
			}
		}
	}
}

// With a publisher that waits for every run of a round (the Kafka one
// does not: TestASlowBrokerHoldsUpOnlyItsOwnAggregates), an event slow to
// be acknowledged delays the others of its round by up to its own wait,
// at most PublishTimeout (and its sixteenth of slack), as DESIGN.md
// states; then the slow one goes on alone and is published.
func TestASlowEventDelaysItsRoundByAtMostThePublishTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		var fast []outbox.Message
		fast = append(fast, w.write("order", "a", 1))
		slow := w.write("order", "slow", 1)
		fast = append(fast, w.write("order", "b", 1))
		// The slow event's first attempt waits until its deadline.
		pub := &runsPublisher{agg: "slow", first: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
		settled := &settleTimes{}
		const timeout = 2 * time.Second
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{PublishTimeout: timeout, Hooks: []relay.Hook{settled}})
		start := time.Now()
		serve(t, r)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 3 })
		for _, m := range fast {
			at, _ := settled.at.Load(m.ID)
			if took := at.(time.Time).Sub(start); took < timeout || took > timeout+timeout/16 {
				t.Errorf("%s acknowledged %s after the start, want between %s and %s: its round waited for the slow one", m.AggregateID, took, timeout, timeout+timeout/16)
			}
		}
		if _, ok := settled.at.Load(slow.ID); !ok {
			t.Fatal("the slow event was never published")
		}
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() {
			t.Fatalf("%s", rep)
		}
	})
}

// settleTimes records when the relay settled each event as published.
type settleTimes struct{ at sync.Map }

func (s *settleTimes) OnPublish(m outbox.Message, _ int, _ time.Duration) {
	s.at.Store(m.ID, time.Now())
}

// badBetweenTwo is a store holding one event each of aggregates a, bad
// and b, which one read of the source puts in one group.
func badBetweenTwo(t *testing.T) (*memstore.Store, *writer) {
	s := memstore.New()
	w := newWriter(t, s)
	for _, agg := range []string{"a", "bad", "b"} {
		w.write("order", agg, 1)
	}
	return s, w
}

// An event refused in its group's round is neither lost nor settled: it is
// tried again, alone, and published; its group-mates are published too.
func TestAnEventRefusedInAGroupIsRetriedNotSettled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, w := badBetweenTwo(t)
		pub := &runsPublisher{agg: "bad", first: func(context.Context) error { return errors.New("not enough replicas") }}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 3 })
		if !pub.tried.Load() {
			t.Fatal("the publisher never refused the event: the test proves nothing")
		}
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}

// attemptLog records what the hooks hear of each attempt.
type attemptLog struct {
	mu        sync.Mutex
	retries   []int // attempt numbers heard by OnRetry
	published map[string]int
}

func (l *attemptLog) OnRetry(_ outbox.Message, a retry.Attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retries = append(l.retries, a.N)
}

func (l *attemptLog) OnPublish(m outbox.Message, attempts int, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.published == nil {
		l.published = map[string]int{}
	}
	l.published[m.AggregateID] = attempts
}

// An attempt refused in a group counts as the event's first: the hooks
// hear it as a retry, and its publish as the second attempt.
func TestAnAttemptRefusedInAGroupIsTheEventsFirstAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := badBetweenTwo(t)
		pub := &runsPublisher{agg: "bad", first: func(context.Context) error { return errors.New("not enough replicas") }}
		log := &attemptLog{}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{Hooks: []relay.Hook{log}})
		serve(t, r)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 3 })
		log.mu.Lock()
		defer log.mu.Unlock()
		if !slices.Equal(log.retries, []int{1}) || log.published["bad"] != 2 || log.published["a"] != 1 {
			t.Fatalf("retries heard %v, attempts at publish %v: want [1], and bad published on its 2nd attempt, a on its 1st", log.retries, log.published)
		}
		if got := r.Stats().Retried; got != 1 {
			t.Fatalf("Stats().Retried = %d, want 1", got)
		}
	})
}

// An event refused for good in a group is dead-lettered on that attempt:
// it is not sent again, and its dead letter counts the one attempt.
func TestAnEventRefusedForGoodInAGroupIsDeadLetteredAfterOneAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := badBetweenTwo(t)
		var sent atomic.Int64
		pub := &runsPublisher{agg: "bad", first: func(context.Context) error { return outbox.Permanent(errors.New("record too large")) }}
		pub.setFail(func(m outbox.Message) error {
			if m.AggregateID == "bad" {
				sent.Add(1)
				return outbox.Permanent(errors.New("record too large"))
			}
			return nil
		})
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 2 && r.Stats().DeadLettered == 1 })
		dls, err := s.ListDeadLetters(context.Background(), outbox.DeadLetterFilter{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) != 1 || dls[0].FailureCount != 1 || sent.Load() != 0 {
			t.Fatalf("dead letters %+v, sent again %d times: want one, of bad, counting 1 attempt, never sent again", dls, sent.Load())
		}
	})
}

// A broker slow to acknowledge, without failing, holds up only the
// aggregates whose records it leads: the rounds they share with others
// are answered without them, the others are published meanwhile, and
// the slow ones follow once the broker answers, each once and in order.
func TestASlowBrokerHoldsUpOnlyItsOwnAggregates(t *testing.T) {
	const topic = "outbox.event.order"
	c, err := kafkatest.NewSlowBroker(topic, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	rg := newRigOn(t, nil, c.ListenAddrs(), kafka.Config{})
	rg.write("order", "warm", 0)
	// A minute per attempt: were a round to wait for its slowest event,
	// nothing of it would be published within the test.
	r, err := relay.New(rg.source(), rg.pub, rg.store, relay.Config{Retry: fastRetry(), PublishTimeout: time.Minute, StuckTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r)
	eventually(t, 10*time.Second, "the topic in use", func() bool { return r.Stats().Published == 1 })
	c.Hold()
	const aggregates = 300
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	fast := 0
	for i := range aggregates {
		agg := fmt.Sprintf("o%d", i)
		rg.write("order", agg, i)
		if c.LeaderFor(topic, int32(partitioner.Partition(&kgo.Record{Key: []byte(agg)}, 4))) != c.Slow {
			fast++
		}
	}
	if fast == 0 || fast == aggregates {
		t.Fatalf("%d of %d aggregates on the fast broker: the test needs both", fast, aggregates)
	}
	// A second event of every aggregate, the slow ones' behind a first
	// still in flight.
	for i := range aggregates {
		rg.write("order", fmt.Sprintf("o%d", i), i)
	}
	eventually(t, 10*time.Second, "every aggregate on the fast broker published", func() bool { return r.Stats().Published == int64(1+2*fast) })
	c.Release()
	eventually(t, 20*time.Second, "the slow broker's follow", func() bool { return r.Stats().Published == 1+2*aggregates })
	if rep := rg.check(); !rep.OK() || rep.Dup != 0 {
		t.Fatalf("%s", rep)
	}
	if n := r.Stats().Retried; n != 0 {
		t.Fatalf("%d attempts retried: a record still in flight is not a failed attempt", n)
	}
}

// A record still in flight when a graceful stop comes is waited for
// (within DrainTimeout) and settled, not left for the next start to
// publish again: the broker may take it after the round gave up on it.
func TestAStopWaitsForARecordLeftInFlightByItsRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, w := badBetweenTwo(t)
		release := make(chan struct{})
		pub := &runsPublisher{agg: "bad", first: func(context.Context) error {
			<-release
			return fmt.Errorf("held: %w", outbox.ErrInFlight)
		}}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		stop := serve(t, r)
		synctest.Wait() // the round is out, the bad aggregate's record held
		if !pub.tried.Load() {
			t.Fatal("the round never reached the held record: the test proves nothing")
		}
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }()
		synctest.Wait() // stopping, the round still out
		close(release)
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if got := len(pub.published()); got != 3 {
			t.Fatalf("%d of 3 published by the stop: the record in flight was left unsettled", got)
		}
		if got := r.Stats().Published; got != 3 {
			t.Fatalf("Stats().Published = %d, want 3", got)
		}
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}

// heldPublisher takes runs of many aggregates at once, and records the
// runs of each call; a call waits until hold is closed (with onlyFirst,
// only the first call does).
type heldPublisher struct {
	fakePublisher
	hold      chan struct{}
	onlyFirst bool
	mu        sync.Mutex
	calls     [][]string // the aggregates of each call's runs
}

func (p *heldPublisher) PublishRuns(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
	var aggs []string
	for _, run := range runs {
		aggs = append(aggs, run[0].AggregateID)
	}
	p.mu.Lock()
	p.calls = append(p.calls, aggs)
	held := len(p.calls) == 1 || !p.onlyFirst
	p.mu.Unlock()
	if held {
		select {
		case <-p.hold:
		case <-ctx.Done():
			failRuns(results, ctx.Err())
			return
		}
	}
	for i, run := range runs {
		for _, m := range run {
			p.Publish(ctx, m)
		}
		results[i] = outbox.RunResult{Acked: len(run)}
	}
}

func (p *heldPublisher) attempts() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func failRuns(results []outbox.RunResult, err error) {
	for i := range results {
		results[i] = outbox.RunResult{Err: err}
	}
}

// Transactions committed while the broker has not yet answered the last
// publish go out together in the next one, each read apart: one produce
// per round trip, not one per transaction.
func TestTransactionsCommittedDuringAPublishGoTogetherInTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &heldPublisher{hold: make(chan struct{})}
		src := memSource(t, s)
		r := newRelay(t, src, pub, s, relay.Config{})
		serve(t, r)
		w.write("order", "first", 1)
		pass(time.Millisecond)
		if got := pub.attempts(); len(got) != 1 {
			t.Fatalf("attempts %v: want the first event's, waiting", got)
		}
		const later = 4 // within the 5 ms a publish may hold reading up
		for i := range later {
			w.write("order", fmt.Sprintf("o%d", i), 1)
			pass(time.Millisecond) // each its own read, if the source is read meanwhile
		}
		close(pub.hold)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 1+later })
		if got := pub.attempts(); len(got) != 2 || len(got[1]) != later {
			t.Fatalf("attempts %v: want the first event's, then the %d committed while it waited in one", got, later)
		}
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}

// A publish the broker is slow to answer holds up reading for 5 ms at
// most: then the events committed meanwhile are read and published, while
// it still waits, and order holds when it is answered.
func TestAPublishSlowToBeAnsweredHoldsUpReadingFor5msAtMost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &heldPublisher{hold: make(chan struct{}), onlyFirst: true}
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{})
		serve(t, r)
		w.write("order", "slow", 1)
		pass(time.Millisecond)
		w.write("order", "other", 1)
		w.write("order", "slow", 2) // behind the one in flight
		pass(3 * time.Millisecond)
		if got := pub.attempts(); len(got) != 1 {
			t.Fatalf("attempts %v 4 ms after the first began: want it alone, reading held up", got)
		}
		pass(time.Millisecond)
		if got := pub.published(); len(got) != 1 || got[0].AggregateID != "other" {
			t.Fatalf("published %v 5 ms after the first began: want other's event, while slow's first still waits", got)
		}
		close(pub.hold)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 3 })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}

// A publish on the reader counts against Workers: while the broker does
// not answer, the reads made after the handover go to the workers, and no
// more than Workers groups and the one on a reader wait at once.
func TestPublishesOnTheReaderCountAgainstTheWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &heldPublisher{hold: make(chan struct{})}
		const workers = 1
		r := newRelay(t, memSource(t, s), pub, s, relay.Config{Workers: workers})
		serve(t, r)
		for i := range 6 {
			w.write("order", fmt.Sprintf("o%d", i), 1)
			pass(6 * time.Millisecond) // past each handover
		}
		if got := pub.attempts(); len(got) != workers+1 {
			t.Fatalf("%d publishes waiting at once, %v: want %d (the workers and one on a reader)", len(got), got, workers+1)
		}
		close(pub.hold)
		settle(t, time.Minute, func() bool { return len(pub.published()) == 6 })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}

// lingeringPublisher is a heldPublisher whose producer lingers.
type lingeringPublisher struct{ *heldPublisher }

func (lingeringPublisher) Linger() time.Duration { return 5 * time.Millisecond }

// Through a publisher that lingers the reader does not publish itself:
// each read goes to the producer at once, to join the request it is
// filling, not held back until the publish before it is answered.
func TestTheReaderDoesNotWaitForAProducerThatLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		w := newWriter(t, s)
		pub := &heldPublisher{hold: make(chan struct{})}
		r := newRelay(t, memSource(t, s), lingeringPublisher{pub}, s, relay.Config{})
		serve(t, r)
		const events = 4
		for i := range events {
			w.write("order", fmt.Sprintf("o%d", i), 1)
			pass(time.Millisecond)
		}
		if got := pub.attempts(); len(got) != events {
			t.Fatalf("attempts %v: want each read handed on at once, %d", got, events)
		}
		close(pub.hold)
		settle(t, time.Minute, func() bool { return len(pub.published()) == events })
		if rep := checker.Check(w.rec.History(), pub.observed(), nil); !rep.OK() || rep.Dup != 0 {
			t.Fatalf("%s", rep)
		}
	})
}
