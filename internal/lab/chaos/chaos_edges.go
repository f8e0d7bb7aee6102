package chaos

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// The scenarios at the edges of the promise: two relays on one store
// (R11), a broker killed hard (R12), an outage longer than the database's
// replication timeout (R13), an operator's request interrupted (R14), and
// one aggregate failing for good while the others flow (R15).

// runTwoRelays starts two relays on one store: while both live, every
// event is published once (one is a standby); the active one is SIGKILLed
// and the standby takes over. Either may be the active one: "relaying" is
// logged before the source is opened, so the second can open it first.
func runTwoRelays(r *chaosRun, res *scenarioResult) error {
	first, err := r.startChild("relay", "--log-level", "info")
	if err != nil {
		return err
	}
	if err := waitOutput(r.ctx, first, "relaying", 30*time.Second); err != nil {
		return err
	}
	second, err := r.startChild("relay", "--log-level", "info")
	if err != nil {
		return err
	}
	standby, err := waitEitherOutput(r.ctx, "standby", 30*time.Second, first, second)
	if err != nil {
		return fmt.Errorf("neither relay said it is a standby: %w\nfirst:\n%s\nsecond:\n%s", err, first.output, second.output)
	}
	active := first
	if standby == first {
		active = second
	}
	aggs, per := 50, r.sizeOn(10, 40, 3, 10)
	if err := r.writeOrders(r.ctx, aggs, per, 4, 0); err != nil {
		return err
	}
	_, obs, err := r.settle(r.ctx, time.Minute)
	if err != nil {
		return err
	}
	dup, _, _, err := r.relayDups(r.ctx, obs)
	if err != nil {
		return err
	}
	res.Figures["dup_while_both_live"] = dup
	if dup != 0 {
		res.fail("%d duplicates while two relays were live: both published", dup)
	}
	if strings.Contains(active.output.String(), "standby") {
		res.fail("the active relay also says it is a standby")
	}
	if strings.Contains(standby.output.String(), "took over") {
		res.fail("the standby says it took over while the active relay lives")
	}
	before, _ := r.published(r.ctx)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, 2*aggs, per, 4, 5*time.Millisecond) }()
	retry.Wait(r.ctx, 300*time.Millisecond)
	active.kill()
	killed := time.Now()
	if err := waitOutput(r.ctx, standby, "took over", 30*time.Second); err != nil {
		res.fail("the standby did not take over within 30 s of the kill")
	}
	took := time.Since(killed)
	for time.Since(killed) < 30*time.Second {
		if n, _ := r.published(r.ctx); n > before+int64(aggs*per/10) {
			break
		}
		retry.Wait(r.ctx, 20*time.Millisecond)
	}
	res.Figures["takeover_ms"] = took.Milliseconds()
	if took > 10*time.Second {
		res.fail("takeover took %s, want seconds", took.Round(time.Millisecond))
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	return standby.stop()
}

// waitOutput waits until a child's output contains s.
func waitOutput(ctx context.Context, c *child, s string, limit time.Duration) error {
	_, err := waitEitherOutput(ctx, s, limit, c)
	return err
}

// waitEitherOutput waits until one of cs says s, and returns which.
func waitEitherOutput(ctx context.Context, s string, limit time.Duration, cs ...*child) (*child, error) {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		for _, c := range cs {
			if strings.Contains(c.output.String(), s) {
				return c, nil
			}
			if c.exited() {
				return nil, fmt.Errorf("chaos: child exited (%v) before saying %q:\n%s", c.err, s, c.output)
			}
		}
		if err := retry.Wait(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("chaos: no %q in the children's output within %s", s, limit)
}

// runBrokerKill kills the broker process hard under load (SIGKILL of the
// Kafka JVM; for the in-process broker, every connection dropped and new
// ones refused) and starts it again after a pause. The outage must show
// within 2 s, and delivery resume within 2 s of the broker answering.
func runBrokerKill(r *chaosRun, res *scenarioResult) error {
	if !r.target.embedded() && r.target.kafkaCtl == "" {
		res.Skipped = "no Kafka control script (OUTBOX_TEST_KAFKA_CTL)"
		return nil
	}
	a, stop, err := r.startApp(nil)
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, 100, 1000, 4, 25*time.Millisecond) }() // ~150 orders/s
	retry.Wait(r.ctx, 2*time.Second)
	if err := r.killBroker(); err != nil {
		return err
	}
	killed := time.Now()
	seen := time.Duration(-1)
	for time.Since(killed) < 10*time.Second {
		if a.Relay().Stats().Breaker != breaker.Closed.String() {
			seen = time.Since(killed)
			break
		}
		retry.Wait(r.ctx, 10*time.Millisecond)
	}
	res.Figures["outage_seen_ms"] = seen.Milliseconds()
	if seen < 0 || seen > 2*time.Second {
		res.fail("the outage showed after %s (breaker %s), want within 2 s", seen, a.Relay().Stats().Breaker)
	}
	a.Health().RunOnce(r.ctx)
	if rep := a.Health().Report()["broker"]; rep.OK {
		res.fail("the broker health check is ok while the broker is dead")
	}
	retry.Wait(r.ctx, time.Duration(r.size(3, 10))*time.Second)
	publishedBefore := a.Relay().Stats().Published
	answered, err := r.restartBroker()
	if err != nil {
		return err
	}
	resumed := time.Duration(-1)
	for time.Since(answered) < 30*time.Second {
		if a.Relay().Stats().Published > publishedBefore {
			resumed = time.Since(answered)
			break
		}
		retry.Wait(r.ctx, 10*time.Millisecond)
	}
	res.Figures["resumed_after_answer_ms"] = resumed.Milliseconds()
	if resumed < 0 || resumed > 2*time.Second {
		res.fail("delivery resumed %s after the broker answered, want within 2 s", resumed)
	}
	cancel()
	if err := <-writeErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	if st := a.Relay().Stats(); st.DeadLettered != 0 {
		res.fail("%d events dead-lettered by a broker outage", st.DeadLettered)
	}
	return stop()
}

// killBroker makes the broker vanish: the Kafka JVM SIGKILLed, or the
// in-process broker's listener closed with every connection.
func (r *chaosRun) killBroker() error {
	if r.target.embedded() {
		r.proxy.Stop()
		return nil
	}
	if out, err := exec.Command(r.target.kafkaCtl, "kill").CombinedOutput(); err != nil {
		return fmt.Errorf("kafka kill: %v: %s", err, out)
	}
	return nil
}

// restartBroker starts the broker again and returns when it first
// answers a metadata request.
func (r *chaosRun) restartBroker() (time.Time, error) {
	if r.target.embedded() {
		if err := r.proxy.Start(); err != nil {
			return time.Time{}, fmt.Errorf("chaos: restart the broker's listener: %w", err)
		}
	} else {
		cmd := exec.Command(r.target.kafkaCtl, "start")
		if err := cmd.Start(); err != nil {
			return time.Time{}, err
		}
		go cmd.Wait()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.target.brokersOr(r.brokers)...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		return time.Time{}, err
	}
	defer cl.Close()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(r.ctx, 200*time.Millisecond)
		err := cl.Ping(ctx)
		cancel()
		if err == nil {
			return time.Now(), nil
		}
		retry.Wait(r.ctx, 20*time.Millisecond)
	}
	return time.Time{}, errors.New("chaos: the broker did not answer within 2 minutes of its restart")
}

// brokersOr is the real broker to probe, or the run's address.
func (t chaosTarget) brokersOr(run []string) []string {
	if len(t.brokers) > 0 {
		return t.brokers
	}
	return run
}

// runLongOutage keeps the broker away for longer than the database's
// replication timeout under load: the CDC stream must stay up (the
// relay keeps answering the server while it cannot publish), and the
// duplicates stay within the in-flight window.
func runLongOutage(r *chaosRun, res *scenarioResult) error {
	cfg := r.config()
	timeout := "n/a (polling)"
	switch {
	case r.target.isScylla():
		timeout = "n/a (CDC reader polls)" // no replication session to time out
	case !r.target.embedded() && r.target.source != "poll":
		// A short wal_sender_timeout for the relay's replication session,
		// so the quick run's outage outlasts it too.
		ms := r.size(2000, 60000)
		cfg.Store = withQuery(cfg.Store, "wal_sender_timeout", strconv.Itoa(ms))
		timeout = (time.Duration(ms) * time.Millisecond).String()
	}
	outage := time.Duration(r.size(6, 90)) * time.Second
	a, stop, err := r.startAppWith(cfg, nil)
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, 100, 1000, 4, 25*time.Millisecond) }()
	retry.Wait(r.ctx, time.Second)
	if err := r.setBrokerDown(true); err != nil {
		return err
	}
	retry.Wait(r.ctx, outage)
	if err := r.setBrokerDown(false); err != nil {
		return err
	}
	retry.Wait(r.ctx, 2*time.Second)
	cancel()
	if err := <-writeErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := r.finish(res, 3*time.Minute); err != nil {
		return err
	}
	restarts := a.Restarts()["relay"]
	res.Figures["outage"] = outage.String()
	res.Figures["replication_timeout"] = timeout
	res.Figures["relay_restarts"] = restarts
	res.Figures["dup_bound"] = "1,024 (the in-flight window)"
	if restarts != 0 {
		res.fail("the relay restarted %d times during the outage: the stream did not stay up", restarts)
	}
	if res.RelayDup > 1024 {
		res.fail("%d duplicates, more than the in-flight window", res.RelayDup)
	}
	if st := a.Relay().Stats(); st.DeadLettered != 0 {
		res.fail("%d events dead-lettered by an outage", st.DeadLettered)
	}
	return stop()
}

// withQuery adds a query parameter to a URL.
func withQuery(u, key, value string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + key + "=" + value
}

// runInterruptedSkip has an operator skip a poison event while the broker
// is down, so the relay skips it and then cannot republish the rest; the
// relay is killed. After the restart, only the named entry is skipped:
// the aggregate's other events are published, in order. On the in-process
// broker a replay is interrupted the same way.
func runInterruptedSkip(r *chaosRun, res *scenarioResult) error {
	poison, err := outbox.NewMessage("invoice", "poison", "InvoiceIssued", 1, map[string]string{"blob": strings.Repeat("x", 2<<20)})
	if err != nil {
		return err
	}
	rest, err := seqEvents("invoice", "poison", "InvoiceIssued", 2, 3)
	if err != nil {
		return err
	}
	if err := labstore.AppendEvents(r.ctx, r.db, append([]outbox.Message{poison}, rest...)...); err != nil {
		return err
	}
	var replayed []outbox.Message
	var fault *kfake.FaultHandle
	if r.target.embedded() {
		// A refusal by the broker's policy, fixed before the replay.
		fault = r.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: r.topicOf("ledger"), Err: kerr.PolicyViolation, Count: -1})
		if replayed, err = seqEvents("ledger", "l1", "Posted", 1, 2); err != nil {
			return err
		}
		if err := labstore.AppendEvents(r.ctx, r.db, replayed...); err != nil {
			return err
		}
	}
	expected := map[string]bool{poison.ID.String(): true}
	for _, m := range append(rest, replayed...) {
		expected[m.ID.String()] = true
	}
	r.expectDead = func(id string) bool { return expected[id] }
	kid, err := r.startChild("relay")
	if err != nil {
		return err
	}
	if err := r.writeOrders(r.ctx, 20, r.sizeOn(5, 20, 3, 10), 2, 0); err != nil {
		return err
	}
	parkedWant := 3 + len(replayed)
	if err := r.waitDeadLetters(parkedWant, time.Minute); err != nil {
		return err
	}
	if fault != nil {
		fault.Remove()
	}
	entries, err := r.db.ParkedMessages(r.ctx, poison.Key())
	if err != nil || len(entries) != 3 || entries[0].Message.ID != poison.ID {
		return fmt.Errorf("chaos: the poison aggregate's parked entries: %v %v", entries, err)
	}
	// Parking, judged while it holds: the final check sees only the
	// entries' last status (skipped, replayed), so an event published
	// behind its dead letter before the operator acted would pass it.
	obs, err := r.observe(r.ctx)
	if err != nil {
		return err
	}
	behind := map[string]bool{}
	for _, m := range append(rest, replayed...) {
		behind[m.ID.String()] = true
	}
	for _, o := range obs {
		if behind[o.ID] {
			res.fail("event %s was published while its aggregate was parked, before the operator acted", o.ID)
		}
	}
	if err := r.setBrokerDown(true); err != nil {
		return err
	}
	// The operator's commands, as the CLI runs them.
	if out, err := exec.Command(r.exe, "dlq", "skip", strconv.FormatInt(entries[0].ID, 10), "--store", r.store, "--reason", "chaos").CombinedOutput(); err != nil {
		return fmt.Errorf("dlq skip: %v: %s", err, out)
	}
	if len(replayed) > 0 {
		l, err := r.db.ParkedMessages(r.ctx, replayed[0].Key())
		if err != nil || len(l) == 0 {
			return fmt.Errorf("chaos: the ledger aggregate is not parked: %v", err)
		}
		if out, err := exec.Command(r.exe, "dlq", "replay", strconv.FormatInt(l[0].ID, 10), "--store", r.store).CombinedOutput(); err != nil {
			return fmt.Errorf("dlq replay: %v: %s", err, out)
		}
	}
	// The relay picks the requests up within its action poll (1 s): the
	// skip happens, the republish of the next event hangs on the broker.
	for deadline := time.Now().Add(30 * time.Second); ; retry.Wait(r.ctx, 50*time.Millisecond) {
		d, err := r.db.GetDeadLetter(r.ctx, entries[0].ID)
		if err == nil && d.Status == outbox.StatusSkipped {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("chaos: the relay did not carry out the skip within 30 s")
		}
	}
	retry.Wait(r.ctx, 2*time.Second)
	kid.kill()
	if err := r.setBrokerDown(false); err != nil {
		return err
	}
	if kid, err = r.startChild("relay"); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; retry.Wait(r.ctx, 50*time.Millisecond) {
		parked, err := r.db.ParkedAggregates(r.ctx)
		if err == nil && len(parked) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: still parked a minute after the restart: %v", parked)
		}
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	all, err := r.db.ListDeadLetters(r.ctx, outbox.DeadLetterFilter{Limit: -1})
	if err != nil {
		return err
	}
	var skipped []string
	for _, d := range all {
		if d.Status == outbox.StatusSkipped {
			skipped = append(skipped, d.Message.ID.String())
		}
	}
	res.Figures["skipped"] = len(skipped)
	res.Figures["replay_interrupted"] = len(replayed) > 0
	if !slices.Equal(skipped, []string{poison.ID.String()}) {
		res.fail("skipped %v, want only the entry the operator named (%s)", skipped, poison.ID)
	}
	if obs, err := r.observe(r.ctx); err == nil {
		want := map[string]bool{rest[0].ID.String(): true, rest[1].ID.String(): true}
		for _, m := range replayed {
			want[m.ID.String()] = true
		}
		for _, o := range obs {
			delete(want, o.ID)
		}
		if len(want) != 0 {
			res.fail("%d events of the interrupted requests were never published", len(want))
		}
	}
	return kid.stop()
}

// topicOf is the run's topic for an aggregate type.
func (r *chaosRun) topicOf(aggregateType string) string {
	return strings.ReplaceAll(r.topicTpl, "{aggregatetype}", aggregateType)
}

// waitDeadLetters waits until the store holds n dead letters.
func (r *chaosRun) waitDeadLetters(n int, limit time.Duration) error {
	for deadline := time.Now().Add(limit); ; retry.Wait(r.ctx, 50*time.Millisecond) {
		dead, err := r.deadLettered(r.ctx)
		if err == nil && len(dead) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: %d dead letters after %s, want %d", len(dead), limit, n)
		}
	}
}

// runStuckAggregate makes one aggregate's topic refuse every write with a
// retryable error (a missing topic the relay may not create on Apache
// Kafka; an injected NOT_ENOUGH_REPLICAS on the in-process broker) while
// the others flow. The read-ahead window and memory stay bounded, the others
// keep flowing, the stuck aggregate is visible, and after the deadline it
// is parked with its reason and the checkpoint moves on.
func runStuckAggregate(r *chaosRun, res *scenarioResult) error {
	const window = 64
	deadline := time.Duration(r.size(5, 60)) * time.Second
	stuckTopic := r.topicOf("ledger")
	cfg := r.config()
	if r.target.embedded() {
		h := r.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: stuckTopic, Err: kerr.NotEnoughReplicas, Count: -1})
		defer h.Remove()
	} else {
		// The ledger's topic does not exist and the relay may not create
		// it: every publish to it fails with UNKNOWN_TOPIC_OR_PARTITION.
		cfg.NoAutoCreate = true
		if err := r.createTopic(r.topicOf(order.AggregateType), nil); err != nil {
			return err
		}
	}
	stuck, err := seqEvents("ledger", "l1", "Posted", 1, 3)
	if err != nil {
		return err
	}
	if err := labstore.AppendEvents(r.ctx, r.db, stuck...); err != nil {
		return err
	}
	expected := map[string]bool{}
	for _, m := range stuck {
		expected[m.ID.String()] = true
	}
	r.expectDead = func(id string) bool { return expected[id] }
	a, stop, err := r.startAppWith(cfg, func(c *relay.Config) { c.MaxInFlight, c.StuckTimeout = window, deadline })
	if err != nil {
		return err
	}
	defer stop()
	var peakHeap atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(r.ctx)
	defer stopSampling()
	go func() {
		var ms runtime.MemStats
		for retry.Wait(sampleCtx, 100*time.Millisecond) == nil {
			runtime.ReadMemStats(&ms)
			peakHeap.Store(max(peakHeap.Load(), int64(ms.HeapInuse)))
		}
	}()
	start := time.Now()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(r.ctx, 100, r.sizeOn(20, 100, 4, 20), 4, 0) }()
	var seenStuck time.Duration
	var flowedWhileStuck int64
	for time.Since(start) < deadline+time.Minute {
		st := a.Relay().Stats()
		if seenStuck == 0 && len(st.Stuck) > 0 {
			seenStuck = time.Since(start)
		}
		if len(st.Stuck) > 0 && st.DeadLettered == 0 {
			flowedWhileStuck = st.Published
		}
		if st.DeadLettered >= int64(len(stuck)) {
			break
		}
		retry.Wait(r.ctx, 50*time.Millisecond)
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	st := a.Relay().Stats()
	res.Figures["max_in_flight"] = window
	res.Figures["peak_in_flight"] = st.PeakInFlight
	res.Figures["stuck_seen_ms"] = seenStuck.Milliseconds()
	res.Figures["published_while_stuck"] = flowedWhileStuck
	res.Figures["stuck_timeout"] = deadline.String()
	res.Figures["peak_heap_mb"] = round(float64(peakHeap.Load()) / (1 << 20))
	if st.PeakInFlight > window {
		res.fail("peak in flight %d, more than MaxInFlight %d", st.PeakInFlight, window)
	}
	if seenStuck == 0 {
		res.fail("the stuck aggregate never showed in the relay's status")
	}
	if flowedWhileStuck == 0 {
		res.fail("nothing was published while the aggregate was stuck: the others did not flow")
	}
	entries, err := r.db.ParkedMessages(r.ctx, stuck[0].Key())
	if err != nil {
		return err
	}
	if len(entries) != len(stuck) || entries[0].Message.ID != stuck[0].ID || !strings.Contains(entries[0].Error, "stuck") ||
		!strings.Contains(entries[0].Error, "NOT_ENOUGH_REPLICAS") && !strings.Contains(entries[0].Error, "UNKNOWN_TOPIC_OR_PARTITION") {
		res.fail("the stuck aggregate was not parked with its reason: %d entries, first error %q", len(entries), firstError(entries))
	}
	if st.DeadLettered != int64(len(stuck)) {
		res.fail("%d events dead-lettered, want only the stuck aggregate's %d", st.DeadLettered, len(stuck))
	}
	if st.LagEvents != 0 {
		res.fail("the checkpoint did not move on: %d events behind it", st.LagEvents)
	}
	return stop()
}

func firstError(d []outbox.DeadLetter) string {
	if len(d) == 0 {
		return ""
	}
	return d[0].Error
}

// createTopic creates a topic with one partition on the real broker.
func (r *chaosRun) createTopic(topic string, configs map[string]*string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.target.brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(r.ctx, 1, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("chaos: create topic %s: %w", topic, err)
	}
	return nil
}

// runTransientRounds makes one aggregate's topic fail with a retryable
// error for several rounds of attempts while the others are published,
// so the breaker stays closed: the aggregate must wait, never be
// dead-lettered (the design's "dead letter after 5 failures" is exactly
// what must not happen), and be published once its topic recovers.
func runTransientRounds(r *chaosRun, res *scenarioResult) error {
	// Several 1.2 s rounds, far below StuckTimeout; on ScyllaDB the first
	// attempt comes 2–3 s in (the confidence window, the reader's start).
	failFor := time.Duration(r.sizeOn(6, 20, 9, 20)) * time.Second
	topic := r.topicOf("ledger")
	cfg := r.config()
	var heal func() error
	if r.target.embedded() {
		h := r.broker.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: -1})
		heal = func() error { h.Remove(); return nil }
	} else {
		// The topic does not exist and the relay may not create it; then
		// it is created.
		cfg.NoAutoCreate = true
		if err := r.createTopic(r.topicOf(order.AggregateType), nil); err != nil {
			return err
		}
		heal = func() error { return r.createTopic(topic, nil) }
	}
	waiting, err := seqEvents("ledger", "l1", "Posted", 1, 3)
	if err != nil {
		return err
	}
	if err := labstore.AppendEvents(r.ctx, r.db, waiting...); err != nil {
		return err
	}
	bl := &breakerLog{}
	a, stop, err := r.startAppWith(cfg, func(c *relay.Config) { c.Hooks = append(c.Hooks, bl) })
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, 100, 1000, 4, 20*time.Millisecond) }()
	retry.Wait(r.ctx, failFor)
	rounds := a.Relay().Stats().Failed
	if err := heal(); err != nil {
		return err
	}
	healed := time.Now()
	for time.Since(healed) < time.Minute && len(a.Relay().Stuck()) > 0 {
		retry.Wait(r.ctx, 20*time.Millisecond)
	}
	res.Figures["published_after_heal_ms"] = time.Since(healed).Milliseconds()
	cancel()
	if err := <-writeErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	st := a.Relay().Stats()
	res.Figures["failing_for"] = failFor.String()
	res.Figures["failed_rounds"] = rounds
	res.Figures["breaker_opened"] = bl.count("open")
	res.Figures["dead_lettered"] = st.DeadLettered
	if rounds < 3 {
		res.fail("only %d failed rounds in %s: the scenario did not test several", rounds, failFor)
	}
	if st.DeadLettered != 0 {
		res.fail("%d events dead-lettered for a transient failure", st.DeadLettered)
	}
	if bl.count("open") != 0 {
		res.fail("the breaker opened %d times while the other aggregates were published", bl.count("open"))
	}
	return stop()
}

// seqEvents are the events of one aggregate with sequences from..to, each
// payload {"seq": N}.
func seqEvents(aggType, id, typ string, from, to int64) ([]outbox.Message, error) {
	var out []outbox.Message
	for seq := from; seq <= to; seq++ {
		m, err := outbox.NewMessage(aggType, id, typ, seq, map[string]int64{"seq": seq})
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
