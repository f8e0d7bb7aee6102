package demo

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/inbox"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labcli"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/sqlite"
)

type demoOptions struct {
	orders    int
	rate      int
	chaos     bool
	keep      bool
	tempStore bool // the store is the demo's own temporary one
}

// Command is `outbox-lab demo`.
func Command(stdout, stderr io.Writer) *cobra.Command {
	var cfg app.Config
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run everything embedded, with traffic, three consumers and a live view",
		Long: `demo runs the whole system in one process with no configuration: SQLite in
a temporary directory, the in-process Kafka-protocol broker, the API on
--http, a traffic generator that creates, updates and cancels orders through
the API, and three consumers (inventory, email, analytics) that drop
duplicates with an inbox table.

With --orders N it creates N orders (each then updated and cancelled), waits
until every event reached every consumer, checks completeness and order with
the checker, prints a one-line verdict and exits 0 or 1. Without it, it runs
until Ctrl-C (or SIGTERM), then stops the traffic and does the same with
what was written.

With --chaos it makes the broker fail for a while (the breaker opens, the
relay applies back-pressure, then recovers) and writes one poison event that
is too large for the broker (it is dead-lettered and its aggregate parked),
once, and says how to look at the dead letter.`,
		Args: labcli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("store") && os.Getenv("OUTBOX_STORE") == "" {
				dir, err := os.MkdirTemp("", "outbox-demo-")
				if err != nil {
					return err
				}
				if !opts.keep {
					defer os.RemoveAll(dir)
				}
				opts.tempStore = true
				cfg.Store = "sqlite://" + filepath.Join(dir, "outbox.db")
				cmd.Flags().Set("store", cfg.Store)
			}
			if opts.chaos && !cmd.Flags().Changed("breaker-open-timeout") && os.Getenv("OUTBOX_BREAKER_OPEN_TIMEOUT") == "" {
				cmd.Flags().Set("breaker-open-timeout", "5s") // see the whole cycle in seconds, not half a minute
			}
			if err := cfg.Resolve(cmd.Flags()); err != nil {
				return err
			}
			if opts.orders < 0 || opts.orders > 100000 {
				return app.Usagef("--orders must be between 0 and 100000, got %d", opts.orders)
			}
			if opts.rate < 1 || opts.rate > 10000 {
				return app.Usagef("--rate must be between 1 and 10000, got %d", opts.rate)
			}
			if opts.chaos && cfg.Brokers != "" {
				return app.Usagef("--chaos injects faults into the embedded broker; it cannot be used with --brokers")
			}
			return runDemo(cmd.Context(), cfg, opts, stdout, stderr)
		},
	}
	cfg.AddFlags(cmd.Flags())
	cfg.AddHTTPFlags(cmd.Flags())
	// The demo's own store is a temporary one, not the shared default.
	store := cmd.Flags().Lookup("store")
	store.DefValue, store.Usage = "", store.Usage+" (default: a SQLite database in a new temporary directory, removed at exit unless --keep)"
	cmd.Flags().IntVar(&opts.orders, "orders", 0, "create N orders (each updated and cancelled), verify every event arrived in order, and exit 0 or 1")
	cmd.Flags().IntVar(&opts.rate, "rate", 20, "orders created per second when running continuously")
	cmd.Flags().BoolVar(&opts.chaos, "chaos", false, "inject a broker outage and one poison event")
	cmd.Flags().BoolVar(&opts.keep, "keep", false, "keep the temporary store after the demo")
	return cmd
}

type demo struct {
	app       *app.App
	opts      demoOptions
	base      string
	client    *http.Client
	topics    []string
	consumers []*consumer
	inbox     *sql.DB

	outMu sync.Mutex // the view, the notes and the verdict share stdout
	out   io.Writer

	created, updated, cancelled, failed atomic.Int64
	brokerDown                          atomic.Bool
	breakerOpened                       atomic.Int64
	chaosNote                           atomic.Value // string
	poisonMu                            sync.Mutex
	poison                              []string // written by chaos, read by verify
}

// say prints to stdout, never in the middle of the view.
func (d *demo) say(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

func (d *demo) poisonIDs() []string {
	d.poisonMu.Lock()
	defer d.poisonMu.Unlock()
	return slices.Clone(d.poison)
}

func runDemo(ctx context.Context, cfg app.Config, opts demoOptions, stdout, stderr io.Writer) error {
	logs := io.Writer(stderr)
	if opts.orders > 0 || labcli.IsTerminal(stdout) {
		logs = io.Discard // the view and the verdict speak for themselves
		if cfg.LogLevel == "debug" {
			logs = stderr
		}
	}
	d := &demo{opts: opts, out: stdout, client: &http.Client{Timeout: 30 * time.Second}}
	d.chaosNote.Store("")
	a, err := app.New(ctx, cfg, logs, app.Options{HTTP: true, RelayConfig: func(rc *relay.Config) {
		rc.Hooks = append(rc.Hooks, breakerCounter{&d.breakerOpened})
	}})
	if err != nil {
		return err
	}
	defer a.Close()
	d.app = a
	d.base = "http://" + a.Addr().String()
	if opts.chaos {
		d.installChaos()
	}
	router, err := kafka.NewRouter(cfg.TopicTemplate)
	if err != nil {
		return app.UsageError{Err: err}
	}
	seen := map[string]bool{}
	for _, typ := range []string{order.EventCreated, order.EventUpdated, order.EventCancelled} {
		if t, err := router.Topic(outbox.Message{AggregateType: order.AggregateType, Type: typ}); err == nil && !seen[t] {
			seen[t] = true
			d.topics = append(d.topics, t)
		}
	}
	inboxDir, err := os.MkdirTemp("", "outbox-demo-inbox-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(inboxDir)
	inboxDB, err := sqlite.Open(ctx, filepath.Join(inboxDir, "inbox.db"), sqlite.Config{Synchronous: "NORMAL"})
	if err != nil {
		return err
	}
	defer inboxDB.Close()
	d.inbox = inboxDB.DB()
	if _, err := inbox.Migrate(ctx, d.inbox, inbox.SQLite); err != nil {
		return err
	}

	// The system runs on a context of its own: a signal (ctx) stops the
	// traffic, and the demo still checks what was written before it stops.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { a.Serve(runCtx) })
	for _, name := range []string{"inventory", "email", "analytics"} {
		c, err := newConsumer(name, a.Brokers(), d.topics, d.inbox, a.ClientOpts())
		if err != nil {
			stop()
			wg.Wait()
			return err
		}
		d.consumers = append(d.consumers, c)
		wg.Go(func() { c.run(runCtx) })
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	d.say("outbox-lab demo: API %s  broker %s  store %s\n", d.base, strings.Join(a.Brokers(), ","), app.RedactURL(cfg.Store))
	if opts.orders == 0 {
		d.say("outbox-lab demo: runs until Ctrl-C; then it stops the traffic, checks that every event written reached every consumer, and prints a verdict\n")
	}
	viewCtx, stopView := context.WithCancel(runCtx)
	var viewWG sync.WaitGroup
	viewWG.Go(func() { d.view(viewCtx, stdout) })
	defer func() { stopView(); viewWG.Wait() }()

	var chaosWG sync.WaitGroup
	if opts.chaos {
		if opts.orders > 0 {
			d.brokerDown.Store(true) // before the first event
		}
		chaosWG.Go(func() { d.chaos(ctx, runCtx, cfg.Store) })
	}
	d.traffic(ctx, runCtx, opts.orders)
	stopped := ctx.Err() != nil
	if stopped {
		d.say("outbox-lab demo: stopping: no new orders after %d; checking that every event written reached every consumer\n", d.created.Load())
	}
	chaosWG.Wait() // with --orders, the whole cycle; after a signal, the broker is back
	var verdict string
	if stopped || opts.orders == 0 {
		verdict, err = d.verifyWritten(runCtx)
	} else {
		verdict, err = d.verify(runCtx, int64(opts.orders*3), true)
	}
	stopView()
	viewWG.Wait() // the view and the verdict share stdout
	if err != nil {
		d.say("verdict: FAIL: %v\n", err)
		return app.ExitCode(1)
	}
	d.say("%s\n", verdict)
	return nil
}

// traffic drives the API: n orders (0: until stop ends, at opts.rate/s),
// each created, updated and cancelled. When stop ends no new step starts;
// the requests under way finish on ctx, so that each one's outcome is known.
func (d *demo) traffic(stop, ctx context.Context, n int) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				d.lifecycle(stop, ctx, i)
			}
		})
	}
	tick := time.NewTicker(time.Second / time.Duration(d.opts.rate))
	defer tick.Stop()
	for i := 0; n == 0 || i < n; i++ {
		if n == 0 {
			select {
			case <-stop.Done():
			case <-tick.C:
			}
		}
		if stop.Err() != nil {
			break
		}
		select {
		case jobs <- i:
		case <-stop.Done():
		}
	}
	close(jobs)
	wg.Wait()
}

func (d *demo) lifecycle(stop, ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	body := fmt.Sprintf(`{"customer_id":"customer-%d","currency":"EUR","items":[{"sku":"sku-%d","quantity":%d,"unit_price":%d}]}`,
		rng.IntN(1000), rng.IntN(50), 1+rng.IntN(5), 100+rng.IntN(10000))
	var o order.Order
	if !d.call(ctx, "POST", "/orders", body, "", &o) {
		return
	}
	d.created.Add(1)
	if stop.Err() != nil || !d.call(ctx, "PATCH", "/orders/"+o.ID, fmt.Sprintf(`{"address":"%d Demo Street"}`, i), `"1"`, &o) {
		return
	}
	d.updated.Add(1)
	if stop.Err() == nil && d.call(ctx, "POST", "/orders/"+o.ID+"/cancel", "", `"2"`, &o) {
		d.cancelled.Add(1)
	}
}

func (d *demo) call(ctx context.Context, method, path, body, ifMatch string, out any) bool {
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, d.base+path, strings.NewReader(body))
		if err != nil {
			return false
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		resp, err := d.client.Do(req)
		if err != nil {
			continue
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
		resp.Body.Close()
		if resp.StatusCode < 300 && err == nil {
			return true
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			break
		}
	}
	d.failed.Add(1)
	return false
}

// consumer reads the order topics as a consumer group through package
// inbox, as a service of the user's would: each record is processed in a
// transaction that records its event id (a duplicate is skipped) and
// the aggregate's sequence (an older event after a newer one is a
// regression), and its offset is committed after.
type consumer struct {
	name   string
	client *kgo.Client
	db     *sql.DB
	inbox  *inbox.Inbox

	mu       sync.Mutex
	received int64
	dups     int64
	outOfSeq int64
}

func newConsumer(name string, brokers, topics []string, db *sql.DB, security []kgo.Opt) (*consumer, error) {
	cl, err := kgo.NewClient(append(slices.Clone(security), kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("demo-"+name), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation(), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())...)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	c := &consumer{name: name, client: cl, db: db}
	if c.inbox, err = inbox.New(inbox.Config{Consumer: name, Dialect: inbox.SQLite, TrackSequences: true, OnProcessed: c.processed}); err != nil {
		cl.Close()
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	return c, nil
}

func (c *consumer) run(ctx context.Context) {
	defer c.client.Close()
	// The demo's consumers have no work of their own: recording the
	// event in the inbox is all their transaction does.
	process := c.inbox.SQLProcessor(c.db, func(context.Context, *sql.Tx, *kgo.Record, inbox.Event, inbox.Result) error { return nil })
	for ctx.Err() == nil {
		if err := inbox.Run(ctx, c.client, process, inbox.RunConfig{}); err != nil {
			return
		}
	}
}

// processed hears each event after its transaction committed.
func (c *consumer) processed(_ inbox.Event, res inbox.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case res.Duplicate:
		c.dups++
	case res.Regression:
		c.received++
		c.outOfSeq++
	default:
		c.received++
	}
}

func (c *consumer) counts() (received, dups, outOfSeq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.dups, c.outOfSeq
}

// installChaos fails every produce request while brokerDown is set.
func (d *demo) installChaos() {
	cl := d.app.Embedded().Cluster()
	cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if !d.brokerDown.Load() {
			return nil, nil, false
		}
		return kafkatest.FailProduce(req, kerr.NotEnoughReplicas.Code), nil, true
	})
}

// breakerCounter counts the breaker opening.
type breakerCounter struct{ opened *atomic.Int64 }

func (b breakerCounter) OnBreakerStateChange(_, to breaker.State) {
	if to == breaker.Open {
		b.opened.Add(1)
	}
}

// chaos: the broker fails for the breaker timeout plus 3 s (at once with
// --orders, so the events queue behind the open breaker; after 2 s
// otherwise); then one poison event, too large for the broker, is
// written, and once it is dead-lettered the demo says, once, how to look
// at it. A signal (stop) ends the cycle with the broker back.
func (d *demo) chaos(stop, ctx context.Context, store string) {
	defer d.brokerDown.Store(false)
	wait := func(dur time.Duration) bool {
		t := time.NewTimer(dur)
		defer t.Stop()
		select {
		case <-stop.Done():
			return false
		case <-t.C:
			return true
		}
	}
	if d.opts.orders == 0 && !wait(2*time.Second) {
		return
	}
	outage := d.app.Config().BreakerTimeout + 3*time.Second
	d.chaosNote.Store(fmt.Sprintf("broker failing every produce for %s", outage))
	d.brokerDown.Store(true)
	if !wait(outage) {
		return
	}
	d.brokerDown.Store(false)
	d.chaosNote.Store("broker back; poison event written")
	poison, err := outbox.NewMessage(order.AggregateType, "poison-1", order.EventUpdated, 1,
		map[string]string{"note": "larger than the broker accepts", "blob": strings.Repeat("x", 2<<20)})
	if err == nil {
		err = labstore.AppendEvents(ctx, d.app.Store(), poison)
	}
	if err != nil {
		d.chaosNote.Store(fmt.Sprintf("broker back; the poison event was not written: %v", err))
		return
	}
	d.poisonMu.Lock()
	d.poison = append(d.poison, poison.ID.String())
	d.poisonMu.Unlock()
	for d.app.Relay().Stats().DeadLettered == 0 {
		if !wait(100 * time.Millisecond) {
			return
		}
	}
	self, _ := os.Executable()
	wd, _ := os.Getwd()
	outboxCmd := outboxCommand(self, wd)
	console, cli := d.base+"/ui/#dlq", outboxCmd+" dlq list --store "+app.RedactURL(store)
	d.chaosNote.Store("broker back; poison event dead-lettered, its aggregate parked: see " + console + " or " + cli)
	hint := "outbox-lab demo: chaos: the broker is back; the poison event is dead-lettered and its aggregate parked. Look at it:\n" +
		"  in the console:  " + console + "\n" +
		"  with the CLI:    " + cli + "   (then: " + outboxCmd + " dlq show ID)\n"
	if d.opts.tempStore && !d.opts.keep {
		hint += "  (the demo's store is removed when it ends; --keep keeps it)\n"
	}
	if d.opts.orders == 0 {
		hint += "  The demo goes on until Ctrl-C, then prints its verdict.\n"
	}
	d.say("%s", hint)
}

func (d *demo) view(ctx context.Context, w io.Writer) {
	tty := labcli.IsTerminal(w)
	every := 2 * time.Second
	if tty {
		every = 500 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastPublished int64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := d.app.Status(ctx)
		now := time.Now()
		rate := float64(st.Published-lastPublished) / now.Sub(last).Seconds()
		lastPublished, last = st.Published, now
		var cons []string
		for _, c := range d.consumers {
			n, dups, bad := c.counts()
			cons = append(cons, fmt.Sprintf("%s %d (dups %d, out of order %d)", c.name, n, dups, bad))
		}
		lines := []string{
			fmt.Sprintf("orders     created %d  updated %d  cancelled %d  failed requests %d", d.created.Load(), d.updated.Load(), d.cancelled.Load(), d.failed.Load()),
			fmt.Sprintf("relay      published %d  (%.0f events/s)  lag %d events, %.2f s  breaker %s  retries %d", st.Published, rate, st.LagEvents, st.LagSeconds, st.Breaker, st.Retried),
			fmt.Sprintf("dead       dead-lettered %d  parked aggregates %d", st.DeadLettered, st.Parked),
			"consumers  " + strings.Join(cons, "  "),
		}
		if note := d.chaosNote.Load().(string); note != "" {
			lines = append(lines, "chaos      "+note)
		}
		if tty {
			d.say("%s", "\x1b[H\x1b[2J"+"outbox-lab demo — "+d.base+"  (Ctrl-C stops and prints the verdict)\n\n"+strings.Join(lines, "\n")+"\n")
		} else {
			d.say("%s\n", strings.Join(lines[:2], " | "))
		}
	}
}

// verifyWritten is the verdict on what the traffic wrote, however much
// that was: the demo ran until a signal. A refused request wrote nothing,
// so it is counted, not a failure.
func (d *demo) verifyWritten(ctx context.Context) (string, error) {
	// The poison event, when written, is dead-lettered before the count.
	deadline := time.Now().Add(d.app.Config().BreakerTimeout + 30*time.Second)
	for d.app.Relay().Stats().DeadLettered < int64(len(d.poisonIDs())) {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the poison event was not dead-lettered in time")
		}
		t := time.NewTimer(100 * time.Millisecond)
		<-t.C
	}
	history, err := labstore.Committed(ctx, d.app.Store())
	if err != nil {
		return "", err
	}
	return d.verify(ctx, int64(len(history)-len(d.poisonIDs())), false)
}

// verify waits until want events reached every consumer, then checks the
// topics against the outbox with the checker. strict: every request
// succeeded, and --orders orders were made.
func (d *demo) verify(ctx context.Context, want int64, strict bool) (string, error) {
	if strict && d.failed.Load() > 0 {
		return "", fmt.Errorf("%d API requests failed", d.failed.Load())
	}
	deadline := time.Now().Add(2*d.app.Config().BreakerTimeout + 60*time.Second)
	for {
		done := true
		for _, c := range d.consumers {
			if n, _, _ := c.counts(); n < want {
				done = false
			}
		}
		if done && (!d.opts.chaos || !strict || len(d.poisonIDs()) > 0 && d.app.Relay().Stats().DeadLettered > 0) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("not every event reached every consumer in time")
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	history, err := labstore.Committed(ctx, d.app.Store())
	if err != nil {
		return "", err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got, err := kafkatest.ReadAll(rctx, d.app.Brokers(), d.topics, d.app.ClientOpts()...)
	if err != nil {
		return "", err
	}
	obs, err := checker.FromKafka(got)
	if err != nil {
		return "", err
	}
	dead, err := d.app.Store().ListDeadLetters(ctx, outbox.DeadLetterFilter{Limit: -1})
	if err != nil {
		return "", err
	}
	var deadIDs []string
	for _, dl := range dead {
		deadIDs = append(deadIDs, dl.Message.ID.String())
	}
	rep := checker.Check(history, obs, deadIDs)
	var cons []string
	var consumerErr error
	for _, c := range d.consumers {
		n, _, bad := c.counts()
		cons = append(cons, fmt.Sprintf("%s %d", c.name, n))
		if n != want || bad != 0 {
			consumerErr = errors.Join(consumerErr, fmt.Errorf("consumer %s: %d events of %d, %d out of order", c.name, n, want, bad))
		}
	}
	sort.Strings(cons)
	if !rep.OK() || consumerErr != nil || (d.opts.chaos && !sameIDs(deadIDs, d.poisonIDs())) {
		return "", errors.Join(fmt.Errorf("%s", rep), consumerErr)
	}
	extra := ""
	if !strict && d.failed.Load() > 0 {
		extra = fmt.Sprintf("; %d requests refused (nothing written)", d.failed.Load())
	}
	if d.opts.chaos {
		st := d.app.Relay().Stats()
		dead := "nothing dead-lettered but the poison event, which is parked"
		if len(d.poisonIDs()) == 0 {
			dead = "nothing dead-lettered (stopped before the poison event)"
		}
		extra += fmt.Sprintf("; chaos: breaker opened %d time(s), %d retries, %s", d.breakerOpened.Load(), st.Retried, dead)
	}
	orders, how := int64(d.opts.orders), ""
	if !strict {
		orders, how = d.created.Load(), " (stopped)"
	}
	return fmt.Sprintf("verdict: OK%s: %d orders, %d events; lost %d, phantom %d, order %d, dup %d; consumers %s%s",
		how, orders, want, rep.Lost, rep.Phantom, rep.Order, rep.Dup, strings.Join(cons, ", "), extra), nil
}

func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[string]bool{}
	for _, x := range a {
		set[x] = true
	}
	for _, y := range b {
		if !set[y] {
			return false
		}
	}
	return true
}

// outboxCommand is how to run the product binary from wd: the outbox
// beside this outbox-lab (bin/outbox after the README's build; relative
// to wd when under it), else go run from the repository.
func outboxCommand(self, wd string) string {
	if self == "" {
		return "go run ./cmd/outbox"
	}
	beside := filepath.Join(filepath.Dir(self), "outbox")
	if fi, err := os.Stat(beside); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "go run ./cmd/outbox"
	}
	if rel, err := filepath.Rel(wd, beside); err == nil && wd != "" && !strings.HasPrefix(rel, "..") {
		if !strings.Contains(rel, string(filepath.Separator)) {
			rel = "." + string(filepath.Separator) + rel
		}
		return rel
	}
	return beside
}
