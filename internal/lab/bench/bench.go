package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labcli"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/retry"
)

// The benchmark measures each figure beside a baseline taken in the same
// run, on the same machine, because these machines are noisy: only the
// ratios are comparable from run to run.

type benchOptions struct {
	events     int
	aggregates int
	payload    int
	stage      time.Duration
	writers    int
	rate       int
	quick      bool
	json       bool
	cpuProfile string
}

// benchReport is the --json document; its top-level *_ratio and e2e
// fields are the headline figures.
type benchReport struct {
	Conditions     benchConditions `json:"conditions"`
	DrainRatio     float64         `json:"drain_ratio"`
	E2EP50Ms       float64         `json:"e2e_p50_ms"`
	E2EP99Ms       float64         `json:"e2e_p99_ms"`
	KeepUpRatio    float64         `json:"keepup_ratio"`
	OverheadRatio  float64         `json:"overhead_ratio"`
	CPURatio       float64         `json:"cpu_ratio"`
	IsolationRatio float64         `json:"isolation_ratio"`
	Drain          drainFigures    `json:"drain"`
	E2E            e2eFigures      `json:"e2e"`
	KeepUp         keepUpFigures   `json:"keepup"`
	Overhead       overheadFigures `json:"overhead"`
	CPU            cpuFigures      `json:"cpu"`
	Isolation      isolationFigs   `json:"isolation"`
}

type benchConditions struct {
	Date         string            `json:"date"`
	Store        string            `json:"store"`
	Source       string            `json:"source"`
	Broker       string            `json:"broker"`
	PayloadBytes int               `json:"payload_bytes"`
	Events       int               `json:"events"`
	Aggregates   int               `json:"aggregates"`
	Writers      int               `json:"writers"`
	StageSeconds float64           `json:"stage_seconds"`
	Producer     string            `json:"producer"`
	Durability   map[string]string `json:"durability"`
	CPUs         int               `json:"cpus"`
	Command      string            `json:"command"`
}

type drainFigures struct {
	RelayPerSec float64 `json:"relay_events_per_sec"`
	RawPerSec   float64 `json:"raw_produce_events_per_sec"`
}

type e2eFigures struct {
	OfferedPerSec float64 `json:"offered_events_per_sec"`
	Samples       int     `json:"samples"`
	P50Ms         float64 `json:"p50_ms"`
	P90Ms         float64 `json:"p90_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
	DesignClaim   string  `json:"design_claim"`
	PollInterval  string  `json:"poll_interval,omitempty"`
}

type keepUpFigures struct {
	WithRelayPerSec    float64 `json:"with_relay_writes_per_sec"`
	WithoutRelayPerSec float64 `json:"without_relay_writes_per_sec"`
	LagMidEvents       int64   `json:"lag_mid_events"`
	LagEndEvents       int64   `json:"lag_end_events"`
	LagMaxEvents       int64   `json:"lag_max_events"`
	// LagFlat: the relay stayed within one second of writes throughout.
	LagFlat bool `json:"lag_flat"`
}

type overheadFigures struct {
	OutboxPerSec float64 `json:"order_and_outbox_writes_per_sec"`
	PlainPerSec  float64 `json:"plain_order_inserts_per_sec"`
	OutboxP50Ms  float64 `json:"order_and_outbox_p50_ms"`
	PlainP50Ms   float64 `json:"plain_order_insert_p50_ms"`
}

type cpuFigures struct {
	RelayMsPer1000 float64 `json:"relay_cpu_ms_per_1000"`
	RawMsPer1000   float64 `json:"raw_producer_cpu_ms_per_1000"`
}

type isolationFigs struct {
	P99UpMs   float64 `json:"write_p99_broker_up_ms"`
	P99DownMs float64 `json:"write_p99_broker_down_ms"`
}

// Command is `outbox-lab bench`.
func Command(stdout, stderr io.Writer) *cobra.Command {
	var cfg app.Config
	var opts benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure drain, latency, keep-up, write overhead, CPU and isolation, each beside its baseline",
		Long: `bench measures, against a store and a broker (default: SQLite and the
embedded broker; --store postgres://... --source cdc|poll --brokers ... for
PostgreSQL and Kafka), each figure beside a baseline taken in the same run:

  drain      the relay emptying a backlog, beside raw franz-go produce of the same records
  e2e        commit -> broker ack latency at half the maximum write rate (the design claims 60-120 ms)
  keep-up    the maximum order-write rate with the relay running, beside the rate without it
  overhead   order + outbox write, beside a plain order insert
  cpu        relay CPU per 1,000 events, beside the raw producer's
  isolation  order-write p99 with the broker unavailable, beside available

Each stage uses a fresh database (PostgreSQL: a new database on the server
named by --store, dropped afterwards) and topics of its own.`,
		Args: labcli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Resolve(cmd.Flags()); err != nil {
				return err
			}
			if opts.quick {
				if !cmd.Flags().Changed("events") {
					opts.events = 3000
				}
				if !cmd.Flags().Changed("stage-seconds") {
					opts.stage = 3 * time.Second
				}
			}
			switch {
			case opts.events < 100 || opts.events > 10_000_000:
				return app.Usagef("--events must be between 100 and 10000000")
			case opts.aggregates < 1 || opts.aggregates > opts.events:
				return app.Usagef("--aggregates must be between 1 and --events")
			case opts.payload < 16 || opts.payload > 1<<20:
				return app.Usagef("--payload-bytes must be between 16 and 1048576")
			case opts.stage < 500*time.Millisecond || opts.stage > 10*time.Minute:
				return app.Usagef("--stage-seconds must be between 0.5 s and 10 min")
			case opts.writers < 1 || opts.writers > 256:
				return app.Usagef("--writers must be between 1 and 256")
			case opts.rate < 0:
				return app.Usagef("--rate must not be negative")
			}
			if opts.cpuProfile != "" {
				f, err := os.Create(opts.cpuProfile)
				if err != nil {
					return app.Usagef("--cpuprofile: %v", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			rep, err := runBench(cmd.Context(), cfg, opts, stderr, strings.Join(os.Args, " "))
			if err != nil {
				return err
			}
			if opts.json {
				return labcli.PrintJSON(stdout, rep)
			}
			printBenchTable(stdout, rep)
			return nil
		},
	}
	cfg.AddFlags(cmd.Flags())
	cmd.Flags().IntVar(&opts.events, "events", 20000, "backlog drained by the drain stage")
	cmd.Flags().IntVar(&opts.aggregates, "aggregates", 100, "aggregates the backlog is spread over")
	cmd.Flags().IntVar(&opts.payload, "payload-bytes", 256, "payload size of drained events")
	cmd.Flags().DurationVar(&opts.stage, "stage-seconds", 10*time.Second, "length of each timed stage")
	cmd.Flags().IntVar(&opts.writers, "writers", 8, "concurrent order writers")
	cmd.Flags().IntVar(&opts.rate, "rate", 0, "offered event rate of the e2e stage (default: half the measured maximum write rate)")
	cmd.Flags().BoolVar(&opts.quick, "quick", false, "small sizes: finishes in under a minute on 2 cores")
	cmd.Flags().BoolVar(&opts.json, "json", false, "print one JSON object instead of the table")
	cmd.Flags().StringVar(&opts.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

type benchEnv struct {
	cfg      app.Config
	opts     benchOptions
	run      string
	brokers  []string
	embedded *kafka.Embedded
	progress *labcli.Progress
	stageSeq int
}

func runBench(ctx context.Context, cfg app.Config, opts benchOptions, stderr io.Writer, command string) (*benchReport, error) {
	e := &benchEnv{cfg: cfg, opts: opts, run: fmt.Sprintf("b%d", time.Now().UnixNano()%1e10), progress: labcli.NewProgress(stderr, "bench", 7)}
	defer e.progress.Done()
	e.brokers = cfg.BrokerList()
	broker := "kafka " + strings.Join(e.brokers, ",")
	if len(e.brokers) == 0 {
		emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
		if err != nil {
			return nil, err
		}
		defer emb.Close()
		e.embedded, e.brokers, broker = emb, emb.Addrs(), "embedded kfake (in-process, memory)"
	}
	rep := &benchReport{}
	source := cfg.Source
	if source == "" {
		source = "poll"
		if strings.HasPrefix(cfg.Store, "postgres") {
			source = "cdc"
		}
	}
	rep.Conditions = benchConditions{
		Date: time.Now().UTC().Format(time.RFC3339), Store: strings.SplitN(app.RedactURL(cfg.Store), "?", 2)[0], Source: source, Broker: broker,
		PayloadBytes: opts.payload, Events: opts.events, Aggregates: opts.aggregates, Writers: opts.writers,
		StageSeconds: opts.stage.Seconds(), Producer: "franz-go, idempotent, acks=all, linger 0", CPUs: runtime.NumCPU(), Command: command,
	}
	steps := []struct {
		name string
		fn   func(context.Context, *benchReport) error
	}{
		{"drain", e.drain},
		{"write rate without relay", e.writeRateWithoutRelay},
		{"write rate with relay", e.keepUp},
		{"plain order inserts", e.overhead},
		{"commit to ack latency", e.e2e},
		{"writes with the broker down", e.isolation},
	}
	for _, st := range steps {
		e.progress.Step(st.name)
		if err := st.fn(ctx, rep); err != nil {
			return nil, fmt.Errorf("bench %s: %w", st.name, err)
		}
	}
	rep.DrainRatio = ratio(rep.Drain.RelayPerSec, rep.Drain.RawPerSec)
	rep.KeepUpRatio = ratio(rep.KeepUp.WithRelayPerSec, rep.KeepUp.WithoutRelayPerSec)
	rep.OverheadRatio = ratio(rep.Overhead.OutboxPerSec, rep.Overhead.PlainPerSec)
	rep.CPURatio = ratio(rep.CPU.RelayMsPer1000, rep.CPU.RawMsPer1000)
	rep.IsolationRatio = ratio(rep.Isolation.P99DownMs, rep.Isolation.P99UpMs)
	rep.E2EP50Ms, rep.E2EP99Ms = rep.E2E.P50Ms, rep.E2E.P99Ms
	return rep, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

// stage is one fresh store, a relay source on it, and topics of its own.
type stage struct {
	store   app.Backend
	cfg     app.Config
	topic   string // template
	cleanup func()
}

func (e *benchEnv) freshStage(ctx context.Context) (*stage, error) {
	e.stageSeq++
	name := fmt.Sprintf("%s_%d", e.run, e.stageSeq)
	cfg := e.cfg
	cfg.Slot = "bench_" + name
	cfg.Retention = 0
	var cleanup []func()
	st := &stage{cfg: cfg, topic: "bench." + name + ".{aggregatetype}"}
	switch {
	case strings.HasPrefix(e.cfg.Store, "sqlite://"):
		dir, err := os.MkdirTemp("", "outbox-bench-")
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		st.cfg.Store = "sqlite://" + filepath.Join(dir, "bench.db")
	default:
		u, err := url.Parse(e.cfg.Store)
		if err != nil {
			return nil, app.Usagef("--store: %v", err)
		}
		admin, err := pgx.Connect(ctx, e.cfg.Store)
		if err != nil {
			return nil, fmt.Errorf("connect to create a benchmark database: %w", err)
		}
		db := "outbox_bench_" + name
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			admin.Close(ctx)
			return nil, fmt.Errorf("create database %s (bench needs CREATEDB): %w", db, err)
		}
		cleanup = append(cleanup, func() {
			bg := context.Background()
			admin.Exec(bg, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, db)
			admin.Exec(bg, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			admin.Close(bg)
		})
		u.Path = "/" + db
		st.cfg.Store = u.String()
	}
	s, err := app.Open(ctx, st.cfg, app.NewLogger(app.Config{LogLevel: "error", LogFormat: "text"}, io.Discard))
	if err != nil {
		for _, c := range cleanup {
			c()
		}
		return nil, err
	}
	st.store = s
	st.cleanup = func() {
		s.Close()
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	return st, nil
}

// ackCounter hears acknowledgements.
type ackCounter struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
	once   sync.Once
	onAck  func(outbox.Message, time.Time)
}

func (a *ackCounter) OnPublish(m outbox.Message, _ int, _ time.Duration) {
	now := time.Now()
	if a.onAck != nil {
		a.onAck(m, now)
	}
	if a.n.Add(1) >= a.target && a.target > 0 {
		a.once.Do(func() { close(a.done) })
	}
}

// startRelay runs a relay on st until the returned stop is called.
func (e *benchEnv) startRelay(ctx context.Context, st *stage, brokers []string, hooks ...relay.Hook) (*relay.Relay, func(), error) {
	src := st.store.Source()
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, TopicTemplate: st.topic, Security: e.cfg.KafkaSecurity()})
	if err != nil {
		return nil, nil, err
	}
	r, err := relay.New(src, pub, st.store, relay.Config{Hooks: hooks,
		Breaker: app.BreakerConfig(st.cfg)})
	if err != nil {
		pub.Close()
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Serve(rctx) }()
	return r, func() { cancel(); <-done; pub.Close() }, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (e *benchEnv) backlogMessages() ([]outbox.Message, error) {
	pad := strings.Repeat("x", max(e.opts.payload-10, 1))
	msgs := make([]outbox.Message, e.opts.events)
	for i := range msgs {
		m, err := outbox.NewMessage("order", fmt.Sprintf("agg-%d", i%e.opts.aggregates), "OrderUpdated", int64(i/e.opts.aggregates+1), map[string]string{"p": pad})
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// drain: a backlog emptied by the relay, beside raw produce of the same
// records; CPU per 1,000 events of each.
func (e *benchEnv) drain(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	// CDC: the slot exists before the backlog (app.Open set it up).
	msgs, err := e.backlogMessages()
	if err != nil {
		return err
	}
	for i := 0; i < len(msgs); i += 500 {
		if err := labstore.AppendEvents(ctx, st.store, msgs[i:min(i+500, len(msgs))]...); err != nil {
			return err
		}
		e.progress.Frac(0.3 * float64(i) / float64(len(msgs)))
	}
	// Baseline: raw franz-go produce of the same records.
	sec, err := e.cfg.KafkaSecurity().Opts()
	if err != nil {
		return err
	}
	raw, err := kgo.NewClient(append(sec, kgo.SeedBrokers(e.brokers...), kgo.AllowAutoTopicCreation(), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer raw.Close()
	rawTopic := "bench." + e.run + ".raw"
	// Warm the topic up (auto-creation is not part of the figure).
	if err := raw.ProduceSync(ctx, &kgo.Record{Topic: rawTopic, Value: []byte("warm")}).FirstErr(); err != nil {
		return err
	}
	records := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		records[i] = kafka.Record(m, rawTopic)
	}
	var produceErr atomic.Value
	cpu0, t0 := cpuTime(), time.Now()
	for _, r := range records {
		raw.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.Store(err)
			}
		})
	}
	if err := raw.Flush(ctx); err != nil {
		return err
	}
	rawDur, rawCPU := time.Since(t0), cpuTime()-cpu0
	if err, _ := produceErr.Load().(error); err != nil {
		return err
	}
	e.progress.Frac(0.5)
	// The relay, on the same broker.
	acks := &ackCounter{target: int64(len(msgs)), done: make(chan struct{})}
	cpu0, t0 = cpuTime(), time.Now()
	_, stop, err := e.startRelay(ctx, st, e.brokers, acks)
	if err != nil {
		return err
	}
	defer stop()
	select {
	case <-acks.done:
	case <-time.After(10 * time.Minute):
		return errors.New("the relay did not drain the backlog in 10 minutes")
	case <-ctx.Done():
		return ctx.Err()
	}
	relayDur, relayCPU := time.Since(t0), cpuTime()-cpu0
	n := float64(len(msgs))
	rep.Drain = drainFigures{RelayPerSec: round(n / relayDur.Seconds()), RawPerSec: round(n / rawDur.Seconds())}
	rep.CPU = cpuFigures{RelayMsPer1000: round(float64(relayCPU.Microseconds()) / n), RawMsPer1000: round(float64(rawCPU.Microseconds()) / n)}
	rep.Conditions.Durability = labstore.Durability(ctx, st.store)
	if e.embedded != nil {
		rep.Conditions.Durability["broker"] = "kfake in memory, no fsync"
	} else {
		rep.Conditions.Durability["broker"] = "Kafka defaults (flush by the OS)"
	}
	return nil
}

func round(f float64) float64 { return math.Round(f*10) / 10 }

// writeLoad runs writers for the stage length and returns the writes per
// second and every write's latency.
func (e *benchEnv) writeLoad(ctx context.Context, write func(context.Context, int) error, pace <-chan struct{}) (float64, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.stage)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	var seq atomic.Int64
	start := time.Now()
	for range e.opts.writers {
		wg.Go(func() {
			var mine []time.Duration
			defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
			for ctx.Err() == nil {
				if pace != nil {
					select {
					case <-pace:
					case <-ctx.Done():
						return
					}
				}
				t := time.Now()
				if err := write(ctx, int(seq.Add(1))); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						firstErr = errors.Join(firstErr, err)
						mu.Unlock()
						cancel()
					}
					return
				}
				mine = append(mine, time.Since(t))
				e.progress.Frac(time.Since(start).Seconds() / e.opts.stage.Seconds())
			}
		})
	}
	wg.Wait()
	return float64(len(lat)) / time.Since(start).Seconds(), lat, firstErr
}

func createOrder(svc *order.Service) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		_, _, err := svc.Create(ctx, order.CreateInput{CustomerID: fmt.Sprint("c", i%1000), Currency: "EUR",
			Items: []order.Item{{SKU: fmt.Sprint("sku-", i%50), Quantity: 1, UnitPrice: 1999}}}, order.Meta{})
		return err
	}
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(int(math.Ceil(p*float64(len(s))))-1, len(s)-1)
	return math.Round(float64(s[max(i, 0)].Microseconds())/10) / 100
}

func (e *benchEnv) writeRateWithoutRelay(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	rate, lat, err := e.writeLoad(ctx, createOrder(order.NewService(st.store.Orders())), nil)
	rep.KeepUp.WithoutRelayPerSec = round(rate)
	rep.Overhead.OutboxPerSec, rep.Overhead.OutboxP50Ms = round(rate), percentile(lat, 0.5)
	return err
}

// keepUp: the same writers with the relay running; lag sampled mid-way
// and at the end.
func (e *benchEnv) keepUp(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	acks := &ackCounter{}
	_, stop, err := e.startRelay(ctx, st, e.brokers, acks)
	if err != nil {
		return err
	}
	defer stop()
	var written atomic.Int64
	create := createOrder(order.NewService(st.store.Orders()))
	var lagMax atomic.Int64
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			lag := written.Load() - acks.n.Load()
			if lag > lagMax.Load() {
				lagMax.Store(lag)
			}
			if rep.KeepUp.LagMidEvents == 0 && time.Since(start) >= e.opts.stage/2 {
				rep.KeepUp.LagMidEvents = lag
			}
		}
	}()
	rate, lat, err := e.writeLoad(ctx, func(ctx context.Context, i int) error {
		if err := create(ctx, i); err != nil {
			return err
		}
		written.Add(1)
		return nil
	}, nil)
	rep.KeepUp.LagEndEvents = written.Load() - acks.n.Load()
	stopSampling()
	<-sampled
	rep.KeepUp.LagMaxEvents = max(lagMax.Load(), rep.KeepUp.LagEndEvents)
	rep.KeepUp.WithRelayPerSec = round(rate)
	rep.KeepUp.LagFlat = float64(rep.KeepUp.LagMaxEvents) <= rate
	rep.Isolation.P99UpMs = percentile(lat, 0.99)
	return err
}

func (e *benchEnv) overhead(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	now := time.Now().UTC().Truncate(time.Microsecond)
	rate, lat, err := e.writeLoad(ctx, func(ctx context.Context, i int) error {
		return labstore.InsertPlain(ctx, st.store, order.Order{ID: fmt.Sprintf("plain-%d", i), CustomerID: fmt.Sprint("c", i%1000), Currency: "EUR",
			Items: []order.Item{{SKU: fmt.Sprint("sku-", i%50), Quantity: 1, UnitPrice: 1999}}, Status: order.StatusPending,
			Total: 1999, Version: 1, CreatedAt: now, UpdatedAt: now})
	}, nil)
	rep.Overhead.PlainPerSec, rep.Overhead.PlainP50Ms = round(rate), percentile(lat, 0.5)
	return err
}

// e2e: a paced load at the offered rate; latency from each commit to the
// broker's acknowledgement of its event, on one clock.
func (e *benchEnv) e2e(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	offered := float64(e.opts.rate)
	if offered == 0 {
		offered = max(rep.KeepUp.WithoutRelayPerSec/2, 1)
	}
	var mu sync.Mutex
	committedAt := map[string]time.Time{}
	var lat []time.Duration
	acks := &ackCounter{onAck: func(m outbox.Message, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := committedAt[m.ID.String()]; ok {
			lat = append(lat, at.Sub(c))
			delete(committedAt, m.ID.String())
		}
	}}
	_, stop, err := e.startRelay(ctx, st, e.brokers, acks)
	if err != nil {
		return err
	}
	defer stop()
	pace := make(chan struct{})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Duration(float64(time.Second) / offered))
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				select {
				case pace <- struct{}{}:
				default: // writers behind: the offered rate is not met
				}
			}
		}
	}()
	_, _, err = e.writeLoad(ctx, func(ctx context.Context, i int) error {
		m, err := outbox.NewMessage("order", fmt.Sprintf("agg-%d", i%e.opts.aggregates), "OrderUpdated", int64(i), map[string]int{"i": i})
		if err != nil {
			return err
		}
		// Stamp before the commit returns, so an ack racing it is not lost;
		// the commit itself is then part of the latency, as it should be.
		mu.Lock()
		committedAt[m.ID.String()] = time.Now()
		mu.Unlock()
		if err := labstore.AppendEvents(ctx, st.store, m); err != nil {
			return err
		}
		mu.Lock()
		if _, pending := committedAt[m.ID.String()]; pending {
			committedAt[m.ID.String()] = time.Now() // the commit time, on the same clock
		}
		mu.Unlock()
		return nil
	}, pace)
	cancel()
	// Let the last acknowledgements arrive.
	retry.Wait(ctx, time.Second)
	mu.Lock()
	samples := slices.Clone(lat)
	mu.Unlock()
	rep.E2E = e2eFigures{OfferedPerSec: round(offered), Samples: len(samples), P50Ms: percentile(samples, 0.5), P90Ms: percentile(samples, 0.9),
		P99Ms: percentile(samples, 0.99), MaxMs: percentile(samples, 1), DesignClaim: "60-120 ms end to end"}
	if rep.Conditions.Source == "poll" {
		rep.E2E.PollInterval = e.cfg.PollInterval.String() + " (in-process commits wake the poller)"
	}
	return err
}

// isolation: the same writers while the relay's broker is unreachable.
func (e *benchEnv) isolation(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	_, stop, err := e.startRelay(ctx, st, []string{"127.0.0.1:1"}) // nothing listens there
	if err != nil {
		return err
	}
	defer stop()
	_, lat, err := e.writeLoad(ctx, createOrder(order.NewService(st.store.Orders())), nil)
	rep.Isolation.P99DownMs = percentile(lat, 0.99)
	return err
}

func printBenchTable(w io.Writer, r *benchReport) {
	c := r.Conditions
	fmt.Fprintf(w, "outbox-lab bench — %s, source %s, broker %s\n", c.Store, c.Source, c.Broker)
	fmt.Fprintf(w, "%d events over %d aggregates, %d-byte payloads, %d writers, %.0f s stages, %s; durability %v; %d CPUs\n\n",
		c.Events, c.Aggregates, c.PayloadBytes, c.Writers, c.StageSeconds, c.Producer, c.Durability, c.CPUs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\tbaseline (same run)\tratio")
	fmt.Fprintf(tw, "drain\t%.0f events/s\t%.0f events/s raw produce\t%.3f\n", r.Drain.RelayPerSec, r.Drain.RawPerSec, r.DrainRatio)
	fmt.Fprintf(tw, "e2e commit->ack\tp50 %.1f ms, p90 %.1f, p99 %.1f, max %.1f\t%s\tat %.0f events/s offered (%d samples)\n",
		r.E2E.P50Ms, r.E2E.P90Ms, r.E2E.P99Ms, r.E2E.MaxMs, r.E2E.DesignClaim, r.E2E.OfferedPerSec, r.E2E.Samples)
	flat := "lag flat"
	if !r.KeepUp.LagFlat {
		flat = "lag GROWS"
	}
	fmt.Fprintf(tw, "keep-up\t%.0f writes/s with relay (%s: %d mid, %d max, %d end)\t%.0f writes/s without\t%.3f\n",
		r.KeepUp.WithRelayPerSec, flat, r.KeepUp.LagMidEvents, r.KeepUp.LagMaxEvents, r.KeepUp.LagEndEvents, r.KeepUp.WithoutRelayPerSec, r.KeepUpRatio)
	fmt.Fprintf(tw, "overhead\t%.0f writes/s, p50 %.2f ms order+outbox\t%.0f inserts/s, p50 %.2f ms plain\t%.3f\n",
		r.Overhead.OutboxPerSec, r.Overhead.OutboxP50Ms, r.Overhead.PlainPerSec, r.Overhead.PlainP50Ms, r.OverheadRatio)
	fmt.Fprintf(tw, "cpu\t%.1f ms per 1,000 events relay\t%.1f ms raw producer\t%.3f\n", r.CPU.RelayMsPer1000, r.CPU.RawMsPer1000, r.CPURatio)
	fmt.Fprintf(tw, "isolation\twrite p99 %.2f ms broker down\t%.2f ms broker up\t%.3f\n", r.Isolation.P99DownMs, r.Isolation.P99UpMs, r.IsolationRatio)
	tw.Flush()
	fmt.Fprintf(w, "\nreproduce: %s\n", c.Command)
}
