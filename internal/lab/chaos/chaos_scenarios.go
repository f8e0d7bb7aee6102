package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// scenarioResult is one row of the chaos table.
type scenarioResult struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Target   string         `json:"target"`
	Seed     uint64         `json:"seed"`
	Report   checker.Report `json:"report"`
	Acked    int            `json:"acknowledged_writes"`
	Missing  int            `json:"acknowledged_without_event"`
	ReadModl int            `json:"read_model_mismatches"`
	Figures  map[string]any `json:"figures"`
	// RelayDup and RelayExtra are the duplicates the relay made (see
	// chaosRun.relayDups), and the most extra copies of one event.
	RelayDup   int      `json:"relay_dup"`
	RelayExtra int      `json:"relay_extra_copies"`
	Failures   []string `json:"failures,omitempty"`
	Skipped    string   `json:"skipped,omitempty"`
	Seconds    float64  `json:"seconds"`
}

func (s *scenarioResult) fail(format string, args ...any) {
	s.Failures = append(s.Failures, fmt.Sprintf(format, args...))
}

// OK is the verdict: the invariants hold and the scenario's own checks
// passed. A skipped scenario is never OK: what it would prove is unproven.
func (s *scenarioResult) OK() bool { return s.Skipped == "" && len(s.Failures) == 0 }

type scenario struct {
	id, name string
	run      func(r *chaosRun, res *scenarioResult) error
}

func scenarios() []scenario {
	return []scenario{
		{id: "R1", name: "baseline", run: runBaseline},
		{id: "R2", name: "relay SIGKILLed at random moments", run: runKills},
		{id: "R3", name: "relay worker panics", run: runPanics},
		{id: "R4", name: "broker outages", run: runOutages},
		{id: "R5", name: "lost acknowledgements", run: runLostAcks},
		{id: "R6", name: "database stopped hard during writes", run: runDatabaseStop},
		{id: "R7", name: "slow broker (latency, bandwidth)", run: runSlowBroker},
		{id: "R8", name: "1% poison events", run: runPoison},
		{id: "R9", name: "relay stopped, then position lost", run: runRetention},
		{id: "R10", name: "fuzzed HTTP input", run: runFuzzHTTP},
		{id: "R11", name: "two relays on one store; the active one SIGKILLed", run: runTwoRelays},
		{id: "R12", name: "broker process killed hard, restarted", run: runBrokerKill},
		{id: "R13", name: "broker outage longer than the replication timeout", run: runLongOutage},
		{id: "R14", name: "operator's skip and replay interrupted", run: runInterruptedSkip},
		{id: "R15", name: "one aggregate failing transiently for good", run: runStuckAggregate},
		{id: "R16", name: "one aggregate failing transiently for rounds, then recovering", run: runTransientRounds},
	}
}

// size scales a figure for --quick.
func (r *chaosRun) size(quick, full int) int {
	if r.quick {
		return quick
	}
	return full
}

// sizeOn scales a figure for --quick, with figures of its own for
// ScyllaDB: there an order write is a note, two lightweight transactions,
// a read and the outbox row (on the emulation, every write of a table
// with the CDC trigger goes through Cassandra's batchlog), about 50
// events/s with 4 writers on a 2-core machine, and every event waits out
// the 2 s confidence window before it is read.
func (r *chaosRun) sizeOn(quick, full, scyllaQuick, scyllaFull int) int {
	if r.target.isScylla() {
		return r.size(scyllaQuick, scyllaFull)
	}
	return r.size(quick, full)
}

// finish settles the run and fills the invariant figures.
func (r *chaosRun) finish(res *scenarioResult, timeout time.Duration) error {
	if r.target.isScylla() {
		if err := r.waitPendingEvents(res); err != nil {
			return err
		}
	}
	rep, obs, err := r.settle(r.ctx, timeout)
	if err != nil {
		return err
	}
	res.Report = rep
	var logged int
	if res.RelayDup, res.RelayExtra, logged, err = r.relayDups(r.ctx, obs); err != nil {
		return err
	}
	if r.target.isScylla() {
		res.Figures["relay_dup"] = res.RelayDup
		if logged > 0 {
			res.Figures["logged_twice"] = logged // writes re-armed past EventWriteDeadline
		}
	}
	committed, err := labstore.Committed(r.ctx, r.db)
	if err != nil {
		return err
	}
	r.mu.Lock()
	res.Acked = len(r.acked)
	r.mu.Unlock()
	res.Missing = r.ackedMissing(committed)
	if res.ReadModl, err = r.readModelMismatches(r.ctx); err != nil {
		return err
	}
	if !rep.OK() {
		res.fail("invariants broken: %s", rep)
	}
	if res.Missing > 0 {
		res.fail("%d acknowledged writes have no event", res.Missing)
	}
	if res.ReadModl > 0 {
		res.fail("read model from the topics differs from the store for %d orders", res.ReadModl)
	}
	return nil
}

func runBaseline(r *chaosRun, res *scenarioResult) error {
	kid, err := r.startChild("relay")
	if err != nil {
		return err
	}
	aggs, per := 100, r.sizeOn(10, 100, 3, 30)
	start := time.Now()
	if err := r.writeOrders(r.ctx, aggs, per, 4, 0); err != nil {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	res.Figures["events"] = aggs * per
	res.Figures["events_per_sec"] = round(float64(aggs*per) / time.Since(start).Seconds())
	if res.RelayDup != 0 {
		res.fail("%d duplicates without any fault", res.RelayDup)
	}
	return kid.stop()
}

// runKills SIGKILLs the relay child at seeded random moments while the
// writers run, restarting it each time, and times how long each new
// child takes to publish again.
func runKills(r *chaosRun, res *scenarioResult) error {
	kills := r.sizeOn(5, 20, 3, 10)
	aggs, per := 100, r.size(40, 100)
	if r.target.isScylla() {
		// A restarted relay waits out the killed one's 2 s lease and the
		// confidence window: writes go on until the last kill is done.
		per = 1000
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, aggs, per, 4, 5*time.Millisecond) }()
	window := strconv.Itoa(chaosWindow)
	kid, err := r.startChild("relay", "--max-in-flight", window)
	if err != nil {
		return err
	}
	var recoveries []time.Duration
	var gaps []int64
	for range kills {
		retry.Wait(r.ctx, time.Duration(200+r.rng.IntN(800))*time.Millisecond)
		// Kill while events are on their way: committed, not yet all
		// published. A kill of an idle relay would prove nothing.
		gap, err := r.unpublished(2 * time.Second)
		if err != nil {
			return err
		}
		kid.kill()
		gaps = append(gaps, gap)
		before, _ := r.published(r.ctx)
		restarted := time.Now()
		if kid, err = r.startChild("relay", "--max-in-flight", window); err != nil {
			return err
		}
		for time.Since(restarted) < 30*time.Second {
			if n, _ := r.published(r.ctx); n > before {
				recoveries = append(recoveries, time.Since(restarted))
				break
			}
			retry.Wait(r.ctx, 10*time.Millisecond)
		}
	}
	if r.target.isScylla() {
		cancel()
	}
	if err := <-writeErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	slices.Sort(recoveries)
	res.Figures["kills"] = kills
	res.Figures["events"] = res.Acked
	res.Figures["unpublished_at_kills"] = fmt.Sprint(gaps)
	for i, g := range gaps {
		if g == 0 {
			res.fail("kill %d found nothing on its way: it proved nothing", i+1)
		}
	}
	if len(recoveries) > 0 {
		res.Figures["recovery_p50_ms"] = recoveries[len(recoveries)/2].Milliseconds()
		res.Figures["recovery_max_ms"] = recoveries[len(recoveries)-1].Milliseconds()
	}
	if len(recoveries) < kills || recoveries[len(recoveries)-1] > chaosRecoveryLimit {
		res.fail("a restarted relay took longer than %s to publish again (%d of %d did)", chaosRecoveryLimit, len(recoveries), kills)
	}
	r.assertDupBound(res, kills)
	return kid.stop()
}

// The read-ahead window of the relays chaos runs, and what a crash may
// publish twice: the records read and not settled (the window), and
// those settled since the last checkpoint (a 50 ms interval of traffic).
const (
	chaosWindow        = 256
	chaosDupPerCrash   = chaosWindow + 200
	chaosRecoveryLimit = 10 * time.Second
)

// assertDupBound fails the scenario when its duplicates exceed what
// crashes crashes may republish.
func (r *chaosRun) assertDupBound(res *scenarioResult, crashes int) {
	bound := crashes * chaosDupPerCrash
	res.Figures["dup_bound"] = bound
	if res.RelayDup > bound {
		res.fail("%d duplicates from %d crashes, more than the bound %d (%d per crash)", res.RelayDup, crashes, bound, chaosDupPerCrash)
	}
	if res.RelayExtra > crashes {
		res.fail("an event published %d times more than the store logged it, after %d crashes", res.RelayExtra, crashes)
	}
}

// unpublished waits (up to limit) until the relay has work it has not
// checkpointed (events behind the polling checkpoint, WAL behind the
// slot's confirmed position, or CDC log rows past each stream's saved
// progress on ScyllaDB), and says how much: events, or bytes of WAL.
func (r *chaosRun) unpublished(limit time.Duration) (int64, error) {
	for deadline := time.Now().Add(limit); ; {
		var gap int64
		lag, slot, err := r.db.SlotLag(r.ctx)
		switch {
		case slot:
			gap = lag
		case r.target.isScylla():
			gap, _, err = r.db.(scyllaDB).CDCBacklog(r.ctx)
		default:
			gap, err = r.db.Unpublished(r.ctx)
		}
		if err != nil {
			return 0, err
		}
		if gap > 0 || time.Now().After(deadline) {
			return gap, nil
		}
		retry.Wait(r.ctx, 2*time.Millisecond)
	}
}

// startApp runs the relay in this process, for scenarios that need its
// insides (hooks, the supervision tree).
func (r *chaosRun) startApp(relayConfig func(*relay.Config)) (*app.App, func() error, error) {
	return r.startAppWith(r.config(), relayConfig)
}

func (r *chaosRun) startAppWith(cfg app.Config, relayConfig func(*relay.Config)) (*app.App, func() error, error) {
	a, err := app.New(r.ctx, cfg, io.Discard, app.Options{RelayConfig: relayConfig, KafkaOpts: r.kafkaOpts()})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	var once sync.Once
	var err2 error
	return a, func() error { // idempotent: scenarios also defer it
		once.Do(func() {
			cancel()
			err2 = <-done
			a.Close()
			if errors.Is(err2, context.Canceled) {
				err2 = nil
			}
		})
		return err2
	}, nil
}

// panicker panics in chosen publishes of the relay (on a worker, or on
// the reader when it publishes a read itself), at most once per relay
// run: two panicking in one run cost one restart,
// and the figure to prove is one supervised restart per panic.
type panicker struct {
	at       map[int64]bool
	restarts func() int64
	mu       sync.Mutex
	count    int64
	due      int
	fired    int64
}

func (p *panicker) OnPublish(outbox.Message, int, time.Duration) {
	p.mu.Lock()
	p.count++
	if p.at[p.count] {
		p.due++
	}
	fire := p.due > 0 && p.restarts() == p.fired
	if fire {
		p.due--
		p.fired++
	}
	n := p.count
	p.mu.Unlock()
	if fire {
		panic(fmt.Sprintf("chaos: injected relay panic at publish %d", n))
	}
}

func (p *panicker) firedCount() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

func runPanics(r *chaosRun, res *scenarioResult) error {
	panics := r.sizeOn(10, 50, 5, 20)
	aggs, per := 100, r.sizeOn(20, 100, 4, 20)
	p := &panicker{at: map[int64]bool{}}
	for len(p.at) < panics {
		p.at[int64(1+r.rng.IntN(aggs*per*3/4))] = true
	}
	goroutinesBefore := runtime.NumGoroutine()
	var running atomic.Pointer[app.App]
	p.restarts = func() int64 {
		if a := running.Load(); a != nil {
			return a.Restarts()["relay"]
		}
		return -1 // not started yet: no panic
	}
	a, stop, err := r.startApp(func(c *relay.Config) { c.Hooks, c.MaxInFlight = append(c.Hooks, p), chaosWindow })
	if err != nil {
		return err
	}
	running.Store(a)
	if err := r.writeOrders(r.ctx, aggs, per, 4, 0); err != nil {
		stop()
		return err
	}
	// Panics still due fire on later publishes: keep some coming.
	svc := order.NewService(r.db.Orders())
	for extra := 0; p.firedCount() < int64(panics) && extra < 3000; extra++ {
		if err := r.writeOne(r.ctx, svc, aggs+extra, 1, 0); err != nil {
			stop()
			return err
		}
		retry.Wait(r.ctx, 5*time.Millisecond)
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		stop()
		return err
	}
	restarts := a.Restarts()
	if err := stop(); err != nil {
		return err
	}
	leaked := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); retry.Wait(r.ctx, 50*time.Millisecond) {
		if leaked = runtime.NumGoroutine() - goroutinesBefore; leaked <= 0 {
			break
		}
	}
	r.assertDupBound(res, int(p.firedCount()))
	res.Figures["panics"] = p.firedCount()
	res.Figures["relay_restarts"] = restarts["relay"]
	res.Figures["leaked_goroutines"] = max(leaked, 0)
	if p.firedCount() != int64(panics) || restarts["relay"] != int64(panics) {
		res.fail("%d panics fired, %d relay restarts; want %d each", p.firedCount(), restarts["relay"], panics)
	}
	for name, n := range restarts {
		if name != "relay" && n > 0 {
			res.fail("%s restarted %d times: only the relay may", name, n)
		}
	}
	if leaked > 0 {
		res.fail("%d goroutines leaked", leaked)
	}
	return nil
}

// breakerLog records the breaker's transitions.
type breakerLog struct {
	mu   sync.Mutex
	seen []string
}

func (b *breakerLog) OnBreakerStateChange(from, to breaker.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seen = append(b.seen, fmt.Sprintf("%s→%s", from, to))
}

func (b *breakerLog) count(to string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.seen {
		if strings.HasSuffix(s, "→"+to) {
			n++
		}
	}
	return n
}

func runOutages(r *chaosRun, res *scenarioResult) error {
	outages := []time.Duration{time.Second, 5 * time.Second, 35 * time.Second}
	if r.quick {
		outages = []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} // breaker opens for 2 s here
	}
	bl := &breakerLog{}
	a, stop, err := r.startApp(func(c *relay.Config) { c.Hooks = append(c.Hooks, bl) })
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() { writeErr <- r.writeOrders(ctx, 50, 1000, 4, 20*time.Millisecond) }()
	var drains []string
	for _, d := range outages {
		retry.Wait(r.ctx, time.Second)
		if err := r.setBrokerDown(true); err != nil {
			return err
		}
		retry.Wait(r.ctx, d)
		if err := r.setBrokerDown(false); err != nil {
			return err
		}
		healed := time.Now()
		for time.Since(healed) < time.Minute {
			if s := a.Relay().Stats(); s.LagEvents == 0 && s.Breaker == breaker.Closed.String() {
				break
			}
			retry.Wait(r.ctx, 10*time.Millisecond)
		}
		drains = append(drains, fmt.Sprintf("%s→%dms", d, time.Since(healed).Milliseconds()))
		if limit := r.breakerTimeout() + 5*time.Second; time.Since(healed) > limit {
			res.fail("drained %s after a %s outage, more than the breaker's open timeout + 5 s", time.Since(healed).Round(time.Millisecond), d)
		}
	}
	cancel()
	if err := <-writeErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	stats := a.Relay().Stats()
	res.Figures["outages"] = fmt.Sprint(outages)
	res.Figures["breaker_opened"] = bl.count("open")
	res.Figures["breaker_closed"] = bl.count("closed")
	res.Figures["dead_lettered"] = stats.DeadLettered
	res.Figures["drain_after_outage"] = strings.Join(drains, " ")
	if stats.DeadLettered != 0 || res.Report.DeadLettered != 0 {
		res.fail("%d events dead-lettered for transient errors", stats.DeadLettered)
	}
	// kfake answers every produce with a retryable error, which the
	// breaker must count. In front of Apache Kafka the requests go
	// unanswered: the idempotent producer keeps and resends them itself
	// (failing one could leave a sequence gap), so the relay just waits;
	// the breaker has nothing to count there, and need not open.
	if bl.count("open") == 0 && r.target.embedded() {
		res.fail("the breaker never opened")
	}
	return stop()
}

// runLostAcks makes the broker apply writes whose replies the relay never
// hears. In kfake a produce request is applied and its connection closed
// instead of answered; in front of Apache Kafka, short windows drop every
// reply and close the connection.
func runLostAcks(r *chaosRun, res *scenarioResult) error {
	want := r.size(20, 100)
	r.faults.loseProb = 0.05
	r.faults.loseAcks.Store(int64(want))
	_, stop, err := r.startApp(nil)
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	windows := 0
	blackouts := make(chan int, 1)
	go func() {
		n := 0
		defer func() { blackouts <- n }()
		if r.target.embedded() {
			return
		}
		for retry.Wait(ctx, time.Duration(100+r.rng.IntN(300))*time.Millisecond) == nil && n < want {
			if _, err := r.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name": "ackloss", "type": "timeout", "stream": "downstream", "toxicity": 1, "attributes": {"timeout": 50}}`)); err != nil {
				return
			}
			retry.Wait(ctx, time.Duration(20+r.rng.IntN(80))*time.Millisecond)
			r.proxy.Toxics.RemoveToxic(context.Background(), "ackloss")
			n++
		}
	}()
	if err := r.writeOrders(r.ctx, 100, r.sizeOn(10, 100, 3, 30), 4, time.Millisecond); err != nil {
		return err
	}
	cancel()
	windows = <-blackouts
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	if r.target.embedded() {
		res.Figures["lost_acks"] = r.faults.lost.Load()
		res.Figures["dup_bound"] = "≤ 1 extra copy per lost ack"
		if r.faults.lost.Load() == 0 {
			res.fail("no acknowledgement was lost: the fault did not fire")
		}
		if int64(res.Report.Dup) > r.faults.lost.Load() {
			res.fail("%d duplicates from %d lost acks", res.Report.Dup, r.faults.lost.Load())
		}
	} else {
		res.Figures["reply_blackouts"] = windows
		res.Figures["dup_bound"] = "what was in flight in each blackout"
		if windows == 0 {
			res.fail("no reply blackout happened: the fault did not fire")
		}
	}
	return stop()
}

// httpWriter drives the serve child's API and remembers what it answered.
type httpWriter struct {
	r        *chaosRun
	base     func() string
	client   *http.Client
	ok, s503 atomic.Int64
	refused  atomic.Int64
	other    atomic.Int64
	pace     time.Duration
	mu       sync.Mutex
	others   map[string]int
}

func (h *httpWriter) do(method, path string, body any, hdr map[string]string) (int, []byte, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(h.r.ctx, method, h.base()+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.refused.Add(1)
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode < 300:
		h.ok.Add(1)
	case resp.StatusCode == http.StatusServiceUnavailable:
		h.s503.Add(1)
	default:
		h.other.Add(1)
		h.mu.Lock()
		if h.others == nil {
			h.others = map[string]int{}
		}
		if len(h.others) < 20 {
			h.others[fmt.Sprintf("%s %d %.80s", method, resp.StatusCode, out)]++
		}
		h.mu.Unlock()
	}
	return resp.StatusCode, out, nil
}

// orders creates n orders and updates each twice, through HTTP, retrying
// what failed; every 2xx is remembered as acknowledged.
func (h *httpWriter) orders(from, n int) error {
	for i := from; i < from+n; i++ {
		var o order.Order
		for {
			code, body, err := h.do("POST", "/orders", order.CreateInput{CustomerID: fmt.Sprintf("c%d", i), Currency: "EUR",
				Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 100}}}, map[string]string{"Idempotency-Key": fmt.Sprintf("%s-%d", h.r.id, i)})
			if err == nil && code == http.StatusCreated || code == http.StatusOK {
				json.Unmarshal(body, &o)
				h.r.ack(o.ID, o.Version)
				break
			}
			if h.r.ctx.Err() != nil {
				return h.r.ctx.Err()
			}
			retry.Wait(h.r.ctx, 20*time.Millisecond)
		}
		for o.Version < 3 {
			retry.Wait(h.r.ctx, h.pace)
			addr := fmt.Sprintf("street %d", o.Version)
			code, body, err := h.do("PATCH", "/orders/"+o.ID, order.UpdateInput{Address: &addr}, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, o.Version)})
			switch {
			case err == nil && code == http.StatusOK:
				json.Unmarshal(body, &o)
				h.r.ack(o.ID, o.Version)
			case code == http.StatusConflict: // an earlier attempt applied
				_, body, _ := h.do("GET", "/orders/"+o.ID, nil, nil)
				json.Unmarshal(body, &o)
			default:
				if h.r.ctx.Err() != nil {
					return h.r.ctx.Err()
				}
				retry.Wait(h.r.ctx, 20*time.Millisecond)
			}
		}
	}
	return nil
}

// runDatabaseStop stops the database hard while `outbox serve` takes
// writes. On PostgreSQL: pg_ctl stop -m immediate, then start. On SQLite
// the database lives in the serve process, so the hard stop is SIGKILL
// of that process (and a new one).
func runDatabaseStop(r *chaosRun, res *scenarioResult) error {
	if r.target.pgDSN != "" && r.target.pgCtl == "" {
		res.Skipped = "no PostgreSQL control script (OUTBOX_TEST_PG_CTL)"
		return nil
	}
	if r.target.isScylla() && r.target.cassandraCtl == "" {
		res.Skipped = "no Cassandra control script (OUTBOX_TEST_CASSANDRA_CTL)"
		return nil
	}
	window := strconv.Itoa(chaosWindow)
	kid, err := r.startChild("serve", "--max-in-flight", window)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	current := kid
	base := func() string { mu.Lock(); defer mu.Unlock(); return "http://" + current.http }
	h := &httpWriter{r: r, base: base, client: &http.Client{Timeout: 5 * time.Second}, pace: 5 * time.Millisecond}
	stops := r.size(1, 3)
	n := r.sizeOn(400, 1200, 120, 600)
	writeErr := make(chan error, 4)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { writeErr <- h.orders(w*n/4, n/4) })
	}
	var downtimes, resumed []string
	for range stops {
		retry.Wait(r.ctx, time.Duration(300+r.rng.IntN(700))*time.Millisecond)
		stopped := time.Now()
		switch {
		case r.target.embedded():
			current.kill()
			next, err := r.startChild("serve", "--max-in-flight", window)
			if err != nil {
				return err
			}
			mu.Lock()
			current = next
			mu.Unlock()
		case r.target.isScylla():
			// SIGKILL of the Cassandra JVM under the emulation, restarted
			// with the same command line (its CDC trigger included); the
			// proxy in front of it stays and dials it again. The node
			// takes seconds to start (the JVM, the commit log's replay):
			// down that long.
			if out, err := exec.Command(r.target.cassandraCtl, "kill").CombinedOutput(); err != nil {
				return fmt.Errorf("cassandra kill: %v: %s", err, out)
			}
			if out, err := exec.Command(r.target.cassandraCtl, "start").CombinedOutput(); err != nil {
				return fmt.Errorf("cassandra start: %v: %s", err, out)
			}
		default:
			if out, err := exec.Command(r.target.pgCtl, "stop-immediate").CombinedOutput(); err != nil {
				return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
			}
			retry.Wait(r.ctx, 2*time.Second)
			if out, err := exec.Command(r.target.pgCtl, "start").CombinedOutput(); err != nil {
				return fmt.Errorf("pg_ctl start: %v: %s", err, out)
			}
		}
		downtimes = append(downtimes, fmt.Sprintf("%dms", time.Since(stopped).Milliseconds()))
		// How long after the database answered again the writes resumed.
		back, ok := time.Now(), h.ok.Load()
		for h.ok.Load() == ok && time.Since(back) < time.Minute && r.ctx.Err() == nil {
			retry.Wait(r.ctx, 10*time.Millisecond)
		}
		resumed = append(resumed, fmt.Sprintf("%dms", time.Since(back).Milliseconds()))
	}
	wg.Wait()
	close(writeErr)
	for err := range writeErr {
		if err != nil {
			return err
		}
	}
	if !r.target.embedded() {
		// The store connection of this run saw the restart too.
		for deadline := time.Now().Add(30 * time.Second); r.db.Ping(r.ctx) != nil && time.Now().Before(deadline); {
			retry.Wait(r.ctx, 100*time.Millisecond)
		}
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	res.Figures["hard_stops"] = stops
	res.Figures["2xx"] = h.ok.Load()
	res.Figures["503"] = h.s503.Load()
	res.Figures["refused_connections"] = h.refused.Load()
	res.Figures["other_errors"] = h.other.Load()
	if len(h.others) > 0 {
		res.Figures["other_examples"] = fmt.Sprint(h.others)
	}
	for k := range h.others {
		if strings.Contains(k, " 5") {
			res.fail("a 5xx other than 503 while the database was down: %s (server: %s)", k, firstLine(current.output.String(), "request failed"))
		}
	}
	res.Figures["downtime"] = strings.Join(downtimes, " ")
	res.Figures["2xx_again_after"] = strings.Join(resumed, " ")
	if r.target.isScylla() && h.s503.Load() == 0 {
		res.fail("no request was answered 503 while Cassandra was down")
	}
	r.assertDupBound(res, stops)
	mu.Lock()
	defer mu.Unlock()
	return current.stop()
}

func runSlowBroker(r *chaosRun, res *scenarioResult) error {
	for _, t := range []string{
		`{"name": "latency", "type": "latency", "stream": "downstream", "toxicity": 1, "attributes": {"latency": 25, "jitter": 10}}`,
		`{"name": "bandwidth", "type": "bandwidth", "stream": "upstream", "toxicity": 1, "attributes": {"rate": 256}}`,
	} {
		if _, err := r.proxy.Toxics.AddToxicJson(strings.NewReader(t)); err != nil {
			return fmt.Errorf("toxic: %w", err)
		}
	}
	a, stop, err := r.startApp(nil)
	if err != nil {
		return err
	}
	defer stop()
	var peakBacklog, peakHeap atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(r.ctx)
	go func() {
		var ms runtime.MemStats
		for retry.Wait(sampleCtx, 50*time.Millisecond) == nil {
			runtime.ReadMemStats(&ms)
			peakHeap.Store(max(peakHeap.Load(), int64(ms.HeapInuse)))
			peakBacklog.Store(max(peakBacklog.Load(), a.Relay().Stats().LagEvents))
		}
	}()
	aggs, per := 100, r.sizeOn(10, 50, 3, 20)
	start := time.Now()
	if err := r.writeOrders(r.ctx, aggs, per, 4, 0); err != nil {
		stopSampling()
		return err
	}
	err = r.finish(res, 3*time.Minute)
	stopSampling()
	if err != nil {
		return err
	}
	stats := a.Relay().Stats()
	res.Figures["toxics"] = "latency 25±10 ms, 256 KB/s"
	res.Figures["events_per_sec"] = round(float64(aggs*per) / time.Since(start).Seconds())
	res.Figures["peak_lag_events"] = peakBacklog.Load()
	res.Figures["peak_in_flight"] = stats.PeakInFlight
	if stats.PeakInFlight > 1024 || stats.PeakInFlight == 0 {
		res.fail("peak in flight %d, want between 1 and MaxInFlight (1,024)", stats.PeakInFlight)
	}
	res.Figures["peak_heap_mb"] = round(float64(peakHeap.Load()) / (1 << 20))
	res.Figures["dead_lettered"] = stats.DeadLettered
	if stats.DeadLettered != 0 {
		res.fail("%d events dead-lettered by a slow broker", stats.DeadLettered)
	}
	return stop()
}

// runPoison mixes 1% poison events (too large for the broker, or routed
// to an illegal topic) into ordinary traffic. Each poison event is the
// first of an aggregate of three, so the two that follow must be parked
// behind it, not published: the dead-lettered set must equal the poison
// aggregates' events, and the other aggregates must not wait for them.
func runPoison(r *chaosRun, res *scenarioResult) error {
	aggs, per := 100, r.sizeOn(10, 100, 3, 30)
	poisonN := aggs * per / 100
	var poison []string
	for i := range poisonN {
		var msgs []outbox.Message
		for seq := int64(1); seq <= 3; seq++ {
			var m outbox.Message
			var err error
			switch {
			case seq > 1:
				m, err = outbox.NewMessage("invoice", fmt.Sprintf("poison-%d", i), "InvoiceAmended", seq, map[string]int64{"seq": seq})
			case i%2 == 0:
				m, err = outbox.NewMessage("invoice", fmt.Sprintf("poison-%d", i), "InvoiceIssued", seq,
					map[string]string{"blob": strings.Repeat("x", 2<<20)})
			default:
				m, err = outbox.NewMessage("bad type!", fmt.Sprintf("poison-%d", i), "InvoiceIssued", seq, map[string]int{"n": i})
			}
			if err != nil {
				return err
			}
			if i%2 == 1 { // the illegal topic is the aggregate type's: keep the aggregate one
				m.AggregateType = "bad type!"
			}
			msgs = append(msgs, m)
			poison = append(poison, m.ID.String())
		}
		if err := labstore.AppendEvents(r.ctx, r.db, msgs...); err != nil {
			return err
		}
	}
	expected := map[string]bool{}
	for _, id := range poison {
		expected[id] = true
	}
	r.expectDead = func(id string) bool { return expected[id] }
	kid, err := r.startChild("relay")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := r.writeOrders(r.ctx, aggs, per, 4, 0); err != nil {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	dead, err := r.deadLettered(r.ctx)
	if err != nil {
		return err
	}
	slices.Sort(dead)
	slices.Sort(poison)
	res.Figures["poison_aggregates"] = poisonN
	res.Figures["dead_lettered"] = len(dead)
	res.Figures["normal_drain_s"] = round(time.Since(start).Seconds())
	if time.Since(start) > time.Minute {
		res.fail("the other aggregates took %s: poison held them back", time.Since(start).Round(time.Second))
	}
	if !slices.Equal(dead, poison) {
		res.fail("dead-lettered %d events, the poison aggregates hold %d: the sets differ", len(dead), len(poison))
	}
	return kid.stop()
}

// runRetention stops the relay while writes continue (the backlog must be
// visible), restarts it (it must drain), then loses its position: on
// PostgreSQL the slot is dropped, as max_slot_wal_keep_size would, and
// the relay must refuse to start rather than skip silently.
func runRetention(r *chaosRun, res *scenarioResult) error {
	kid, err := r.startChild("relay")
	if err != nil {
		return err
	}
	if err := r.writeOrders(r.ctx, 10, 5, 2, 0); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); retry.Wait(r.ctx, 20*time.Millisecond) {
		if n, _ := r.published(r.ctx); n >= 50 {
			break
		}
	}
	if err := kid.stop(); err != nil {
		return fmt.Errorf("relay did not stop cleanly: %w: %s", err, kid.output)
	}
	before, _ := r.published(r.ctx)
	svc := order.NewService(r.db.Orders())
	n := r.sizeOn(200, 2000, 100, 500)
	firstBacklog := time.Now()
	for range n {
		o, _, err := svc.Create(r.ctx, order.CreateInput{CustomerID: "c", Currency: "EUR", Items: []order.Item{{SKU: "a", Quantity: 1, UnitPrice: 1}}}, order.Meta{})
		if err != nil {
			return err
		}
		r.ack(o.ID, o.Version)
	}
	if after, _ := r.published(r.ctx); after != before {
		res.fail("%d events published with the relay stopped", after-before)
	}
	if r.target.isScylla() {
		return r.cdcBacklog(res, n, firstBacklog)
	}
	backlog, err := r.db.Unpublished(r.ctx)
	if err != nil {
		return err
	}
	lag, slot, _ := r.db.SlotLag(r.ctx)
	switch {
	case slot:
		res.Figures["slot_lag_bytes"] = lag
		if lag <= 0 {
			res.fail("slot lag %d bytes with %d events waiting: the backlog is invisible", lag, n)
		}
	default:
		res.Figures["backlog_events"] = backlog
		if backlog < int64(n) {
			res.fail("backlog %d with %d events waiting: the backlog is invisible", backlog, n)
		}
	}
	if kid, err = r.startChild("relay"); err != nil {
		return err
	}
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	if err := kid.stop(); err != nil {
		return err
	}
	if r.target.embedded() || r.target.source == "poll" {
		res.Figures["position_loss"] = "n/a: polling reads the outbox table, whose rows are kept until acknowledged; nothing expires"
		return nil
	}
	admin, err := pgx.Connect(r.ctx, r.target.pgDSN)
	if err != nil {
		return err
	}
	defer admin.Close(r.ctx)
	// The stopped relay's walsender ends a moment after the process: the
	// server holds the slot active until it notices the connection closed.
	for deadline := time.Now().Add(10 * time.Second); ; retry.Wait(r.ctx, 50*time.Millisecond) {
		var active bool
		err := admin.QueryRow(r.ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&active)
		if err != nil {
			return fmt.Errorf("the slot before dropping it: %w", err)
		}
		if !active {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slot %s still active 10 s after the relay stopped", r.slot)
		}
	}
	if _, err := admin.Exec(r.ctx, `SELECT pg_drop_replication_slot($1)`, r.slot); err != nil {
		return fmt.Errorf("drop slot: %w", err)
	}
	kid, err = r.startChild("relay")
	if err != nil {
		return err
	}
	select {
	case <-kid.done:
	case <-time.After(30 * time.Second):
		kid.kill()
		res.fail("the relay kept running after its slot was lost")
		return nil
	}
	res.Figures["position_loss"] = "relay exited: " + firstLine(kid.output.String(), "slot")
	if kid.err == nil || !strings.Contains(kid.output.String(), "slot") {
		res.fail("the relay did not fail loudly on a lost slot (exit %v)", kid.err)
	}
	return nil
}

// cdcBacklog is R9 on ScyllaDB, whose backlog is the CDC log past each
// stream's saved progress. With the relay stopped it is read from the
// store (scylla.Store.CDCBacklog): at least the n events written since.
// A relay shows it as CDC lag (the
// backend's cdcLag, exported as outbox_cdc_lag_seconds and checked by the
// cdc-log-ttl health check against the log's TTL): the age of the oldest
// change read and not acknowledged. So the relay is restarted in this
// process and its lag sampled: it must show at least how long the first
// change of the backlog waited, and fall to 0 once the backlog drained.
// There is no position to lose: the reader resumes from progress saved in
// the store, and the log keeps each change for its TTL.
func (r *chaosRun) cdcBacklog(res *scenarioResult, n int, firstBacklog time.Time) error {
	rows, oldest, err := r.db.(scyllaDB).CDCBacklog(r.ctx)
	if err != nil {
		return err
	}
	res.Figures["cdc_backlog_rows"] = rows
	if !oldest.IsZero() {
		res.Figures["cdc_backlog_oldest_age_s"] = round(time.Since(oldest).Seconds())
	}
	if rows < int64(n) {
		res.fail("the CDC log holds %d rows past the saved progress with the relay stopped and %d events written since: the backlog is invisible", rows, n)
	}
	a, stop, err := r.startApp(nil)
	if err != nil {
		return err
	}
	defer stop()
	restarted := time.Now()
	var peak atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(r.ctx)
	defer stopSampling()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for retry.Wait(sampleCtx, 10*time.Millisecond) == nil {
			if lag, _, ok := a.Store().CDCLag(); ok {
				peak.Store(max(peak.Load(), int64(lag)))
			}
		}
	}()
	if err := r.finish(res, 2*time.Minute); err != nil {
		return err
	}
	stopSampling()
	<-sampled
	// The last acknowledgements reach the reader's tracker a commit later.
	var after time.Duration
	for deadline := time.Now().Add(5 * time.Second); ; retry.Wait(r.ctx, 20*time.Millisecond) {
		lag, ttl, _ := a.Store().CDCLag()
		after = lag
		res.Figures["cdc_log_ttl"] = ttl.String()
		if lag == 0 || time.Now().After(deadline) {
			break
		}
	}
	waited := restarted.Sub(firstBacklog)
	res.Figures["first_backlog_change_waited_s"] = round(waited.Seconds())
	res.Figures["peak_cdc_lag_s"] = round(time.Duration(peak.Load()).Seconds())
	res.Figures["cdc_lag_after_drain_s"] = round(after.Seconds())
	if time.Duration(peak.Load()) < waited {
		res.fail("the restarted relay's CDC lag peaked at %s, less than the %s its backlog's first change had waited: the backlog is invisible",
			time.Duration(peak.Load()).Round(time.Millisecond), waited.Round(time.Millisecond))
	}
	if after != 0 {
		res.fail("CDC lag %s after the backlog drained, want 0", after.Round(time.Millisecond))
	}
	res.Figures["position_loss"] = "n/a: the CDC log keeps a change for its TTL (cdc_ttl); past it the cdc-log-ttl health check and alert fire"
	return stop()
}

func firstLine(s, containing string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, containing) {
			if len(l) > 400 {
				l = l[:400] + "…"
			}
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// runFuzzHTTP sends seeded random requests to `outbox serve`: none may
// answer 5xx, and none answered 4xx may change the store.
func runFuzzHTTP(r *chaosRun, res *scenarioResult) error {
	kid, err := r.startChild("serve")
	if err != nil {
		return err
	}
	h := &httpWriter{r: r, base: func() string { return "http://" + kid.http }, client: &http.Client{Timeout: 10 * time.Second}}
	// One real order to aim at.
	if err := h.orders(0, 1); err != nil {
		return err
	}
	r.mu.Lock()
	known := r.acked[0].order
	r.mu.Unlock()
	n := r.sizeOn(300, 3000, 150, 1000)
	statuses := map[int]int{}
	for range n {
		method, path, body, hdr := fuzzRequest(r, known)
		before, err := r.contents(r.ctx)
		if err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(r.ctx, method, h.base()+path, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			res.fail("%s %s: %v", method, path, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode >= 500 {
			res.fail("%s %s answered %d", method, path, resp.StatusCode)
		}
		if resp.StatusCode >= 400 {
			if after, _ := r.contents(r.ctx); after != before {
				res.fail("%s %s answered %d but changed the store's rows", method, path, resp.StatusCode)
			}
		}
		if len(res.Failures) > 5 {
			break
		}
	}
	res.Figures["requests"] = n
	res.Figures["statuses"] = countsByStatus(statuses)
	if err := r.finish(res, time.Minute); err != nil {
		return err
	}
	return kid.stop()
}

// fuzzRequest mutates valid requests: random bytes, truncation, huge and
// negative numbers, unknown fields, wrong types, bad headers and paths.
func fuzzRequest(r *chaosRun, known string) (method, path string, body []byte, hdr map[string]string) {
	valid := []struct {
		method, path, body string
	}{
		{"POST", "/orders", `{"customer_id":"c1","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`},
		{"PATCH", "/orders/" + known, `{"address":"1 Main St"}`},
		{"POST", "/orders/" + known + "/cancel", ``},
		{"GET", "/orders/" + known, ``},
		{"POST", "/dlq/1/replay", `{"reason":"x"}`},
	}
	v := valid[r.rng.IntN(len(valid))]
	method, path, body = v.method, v.path, []byte(v.body)
	hdr = map[string]string{"Content-Type": "application/json"}
	switch r.rng.IntN(12) {
	case 0: // flip bytes
		for range 1 + r.rng.IntN(4) {
			if len(body) > 0 {
				body[r.rng.IntN(len(body))] = byte(r.rng.IntN(256))
			}
		}
	case 1: // truncate
		if len(body) > 0 {
			body = body[:r.rng.IntN(len(body))]
		}
	case 2:
		body = []byte(strings.Replace(string(body), `"quantity":1`, `"quantity":1e400`, 1))
		body = []byte(strings.Replace(string(body), `"address":"1 Main St"`, `"address":-1`, 1))
	case 3:
		body = []byte(strings.Replace(string(body), `{`, `{"admin":true,`, 1))
	case 4:
		body = append(body, []byte(`{"trailing":1}`)...)
	case 5:
		body = bytes.Repeat([]byte("["), 1+r.rng.IntN(100000))
	case 6:
		hdr["Content-Type"] = []string{"text/plain", "", "application/json; charset=latin1", "application/xml"}[r.rng.IntN(4)]
	case 7:
		hdr["If-Match"] = []string{`"x"`, `"-1"`, `"99999999999999999999"`, `*`, `W/"1"`}[r.rng.IntN(5)]
	case 8:
		hdr["Idempotency-Key"] = strings.Repeat("k", 1+r.rng.IntN(4096))
	case 9:
		method = []string{"PUT", "DELETE", "OPTIONS", "TRACE", "PROPFIND"}[r.rng.IntN(5)]
	case 10:
		path = []string{"/orders/%00", "/orders/" + strings.Repeat("a", 5000), "/../etc/passwd", "/orders//cancel", "/dlq?limit=-1", "/dlq/0"}[r.rng.IntN(6)]
	case 11:
		body = bytes.Repeat([]byte(`{"customer_id":"`), 1+r.rng.IntN(200000))
	}
	return method, path, body, hdr
}

// countsByStatus prints HTTP status counts as "200: 51, 503: 2", in
// order of status.
func countsByStatus(statuses map[int]int) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(statuses)) {
		parts = append(parts, fmt.Sprintf("%d: %d", code, statuses[code]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
