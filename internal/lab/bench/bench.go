package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"github.com/twmb/franz-go/pkg/kadm"
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
	hotKeys    ints // aggregate counts of the hot-key drains
	backlog    ints // backlog sizes of the backlog curve
	rates      ints // offered rates of the latency stages
	payload    int
	stage      seconds
	writers    int
	quick      bool
	json       bool
	cpuProfile string
	outbox     string
}

// benchReport is the --json document; its top-level *_ratio and e2e
// fields are the headline figures.
type benchReport struct {
	Conditions benchConditions `json:"conditions"`
	// DrainRatio is the drain over the limit: the slower of raw produce
	// and a raw read of the source (PostgreSQL), else raw produce.
	DrainRatio float64 `json:"drain_ratio"`
	// HotKeyRatio is the 10-aggregate drain over the main drain (or the
	// fewest aggregates measured, when 10 is not among --hot-keys).
	HotKeyRatio float64 `json:"hotkey_ratio"`
	// E2EP50Ms and E2EP99Ms are the worst over the offered rates.
	E2EP50Ms    float64 `json:"e2e_p50_ms"`
	E2EP99Ms    float64 `json:"e2e_p99_ms"`
	KeepUpRatio float64 `json:"keepup_ratio"`
	// KeepUpRawRatio is keep-up with a raw producer publishing each write
	// as it commits (nothing read from the store) in the relay's place:
	// what publishing every write at once costs this machine.
	KeepUpRawRatio float64 `json:"keepup_raw_produce_ratio"`
	OverheadRatio  float64 `json:"overhead_ratio"`
	// CPURatio is the relay's CPU per event over raw produce's, in the
	// drain (both in this process, nothing else running).
	CPURatio float64 `json:"cpu_ratio"`
	// CPURatioAtRates is the worst of the same ratio at the offered rates
	// (the relay a child process, raw produce paced at the same rate).
	CPURatioAtRates float64         `json:"cpu_ratio_at_rates"`
	IsolationRatio  float64         `json:"isolation_ratio"`
	Drain           drainFigures    `json:"drain"`
	HotKeys         []hotKeyFigure  `json:"hot_keys"`
	Backlog         []backlogFigure `json:"backlog"`
	Latency         []rateFigure    `json:"latency"`
	KeepUp          keepUpFigures   `json:"keepup"`
	Overhead        overheadFigures `json:"overhead"`
	CPU             cpuFigures      `json:"cpu"`
	Isolation       isolationFigs   `json:"isolation"`
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
	LoadAvg      string            `json:"loadavg_at_start"`
	ChildRelay   string            `json:"child_relay"`
	PollInterval string            `json:"poll_interval,omitempty"`
	Command      string            `json:"command"`
}

type drainFigures struct {
	RelayPerSec float64 `json:"relay_events_per_sec"`
	RawPerSec   float64 `json:"raw_produce_events_per_sec"`
	// SourceReadPerSec is the raw read of the same source, publishing
	// nothing (PostgreSQL: the slot with pglogrepl, or the table); 0
	// when not measured (SQLite).
	SourceReadPerSec float64 `json:"raw_source_read_events_per_sec"`
	SourceRead       string  `json:"raw_source_read,omitempty"`
	LimitPerSec      float64 `json:"limit_events_per_sec"`
	// StartupMs is from the relay's start to its first acknowledgement,
	// left out of RelayPerSec.
	StartupMs float64 `json:"relay_startup_ms"`
	// ProduceRatio is the drain over raw produce alone.
	ProduceRatio float64 `json:"produce_ratio"`
}

type hotKeyFigure struct {
	Aggregates  int     `json:"aggregates"`
	Events      int     `json:"events"`
	RelayPerSec float64 `json:"relay_events_per_sec"`
	// Ratio is over the main drain (--aggregates) of the same run.
	Ratio float64 `json:"ratio"`
}

type backlogFigure struct {
	Events int `json:"events"`
	// PerSec is from the first record on the broker to the last; startup
	// is the child's start to the first record.
	PerSec       float64 `json:"events_per_sec"`
	StartupMs    float64 `json:"startup_ms"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	CPUMsPer1000 float64 `json:"cpu_ms_per_1000"`
	WriteSeconds float64 `json:"backlog_write_seconds"`
	Aggregates   int     `json:"aggregates"`
}

type rateFigure struct {
	OfferedPerSec  float64 `json:"offered_events_per_sec"`
	AchievedPerSec float64 `json:"achieved_events_per_sec"`
	EventsPerTx    int     `json:"events_per_transaction"`
	Samples        int     `json:"samples"`
	Lost           int     `json:"not_consumed"`
	P50Ms          float64 `json:"p50_ms"`
	P90Ms          float64 `json:"p90_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	// AppendP50Ms and AppendP99Ms are commit -> the broker's append
	// (LogAppendTime, millisecond resolution; Apache Kafka only): what of
	// the latency is before the consumer.
	AppendP50Ms     float64 `json:"commit_to_append_p50_ms,omitempty"`
	AppendP99Ms     float64 `json:"commit_to_append_p99_ms,omitempty"`
	RelayCPUPer1000 float64 `json:"relay_cpu_ms_per_1000"`
	RawCPUPer1000   float64 `json:"raw_produce_cpu_ms_per_1000"`
	// IdleCPUMsPerSec is this process's CPU while idle, taken out of
	// RawCPUPer1000.
	IdleCPUMsPerSec float64 `json:"bench_idle_cpu_ms_per_sec"`
	CPURatio        float64 `json:"cpu_ratio"`
	CPUNote         string  `json:"cpu_note,omitempty"`
}

type keepUpFigures struct {
	WithRelayPerSec    float64 `json:"with_relay_writes_per_sec"`
	WithoutRelayPerSec float64 `json:"without_relay_writes_per_sec"`
	// WithRawProducePerSec: the same writers, each write followed by a raw
	// franz-go produce of one record of an event's size, the relay not
	// running.
	WithRawProducePerSec float64 `json:"with_raw_produce_writes_per_sec"`
	LagMidEvents         int64   `json:"lag_mid_events"`
	LagEndEvents         int64   `json:"lag_end_events"`
	LagMaxEvents         int64   `json:"lag_max_events"`
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
	// StartupMs is the relay's CPU before its first acknowledgement, left
	// out of RelayMsPer1000.
	StartupMs float64 `json:"relay_startup_cpu_ms"`
}

type isolationFigs struct {
	P99UpMs   float64 `json:"write_p99_broker_up_ms"`
	P99DownMs float64 `json:"write_p99_broker_down_ms"`
}

// Command is `outbox-lab bench`.
func Command(stdout, stderr io.Writer) *cobra.Command {
	var cfg app.Config
	opts := benchOptions{hotKeys: ints{5000, 100, 10, 1}, backlog: ints{10_000, 100_000}, rates: ints{1000, 5000, 20_000},
		stage: seconds(10 * time.Second)}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure drain, hot keys, backlog, latency, keep-up, write overhead, CPU and isolation, each beside its baseline",
		Long: `bench measures, against a store and a broker (default: SQLite and the
embedded broker; --store postgres://... --source cdc|poll --brokers ... for
PostgreSQL and Kafka), each figure beside a baseline taken in the same run:

  drain      the relay emptying a backlog, beside the limit: the slower of raw
             franz-go produce of the same records and a raw read of the same
             replication slot (cdc) or table (poll, SQLite) that publishes nothing
  hot keys   the same drain with --hot-keys aggregates, beside the main drain
  backlog    backlogs of --backlog events committed while the relay is stopped,
             then drained by 'outbox relay' in a child process: rate, peak RSS, CPU
  latency    commit -> consumer p50/p99 at each --rates offered rate, 'outbox relay'
             in a child process; its CPU per 1,000 events beside raw produce at the
             same rate
  keep-up    the maximum order-write rate with the relay running, beside the rate without it,
             and the rate with a raw franz-go produce of each write instead of the relay
  overhead   order + outbox write, beside a plain order insert
  cpu        relay CPU per 1,000 events in the drain, beside the raw producer's
  isolation  order-write p99 with the broker unavailable, beside available

Each stage uses a fresh database (PostgreSQL: a new database on the server
named by --store, dropped afterwards) and topics of its own. The child
relay is --outbox, else an outbox binary beside this one or on PATH, else
one built with go build.`,
		Args: labcli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Resolve(cmd.Flags()); err != nil {
				return err
			}
			changed := cmd.Flags().Changed
			if opts.quick {
				if !changed("events") {
					opts.events = 5000
				}
				if !changed("stage-seconds") {
					opts.stage = seconds(2 * time.Second)
				}
				if !changed("backlog") {
					opts.backlog = ints{10_000}
				}
			}
			if !changed("aggregates") {
				opts.aggregates = min(opts.aggregates, opts.events)
			}
			if !changed("hot-keys") {
				opts.hotKeys = slices.DeleteFunc(slices.Clone(opts.hotKeys), func(n int) bool { return n > opts.events })
			}
			stage := time.Duration(opts.stage)
			switch {
			case opts.events < 100 || opts.events > 10_000_000:
				return app.Usagef("--events must be between 100 and 10000000")
			case opts.aggregates < 1 || opts.aggregates > opts.events:
				return app.Usagef("--aggregates must be between 1 and --events")
			case slices.ContainsFunc(opts.hotKeys, func(n int) bool { return n < 1 || n > opts.events }):
				return app.Usagef("--hot-keys: each must be between 1 and --events (%d)", opts.events)
			case slices.ContainsFunc(opts.backlog, func(n int) bool { return n < 100 || n > 10_000_000 }):
				return app.Usagef("--backlog: each must be between 100 and 10000000")
			case slices.ContainsFunc(opts.rates, func(n int) bool { return n < 1 || n > 1_000_000 }):
				return app.Usagef("--rates: each must be between 1 and 1000000 events/s")
			case opts.payload < 16 || opts.payload > 1<<20:
				return app.Usagef("--payload-bytes must be between 16 and 1048576")
			case stage < 500*time.Millisecond || stage > 10*time.Minute:
				return app.Usagef("--stage-seconds must be between 0.5 s and 10 min, got %s", stage)
			case opts.writers < 1 || opts.writers > 256:
				return app.Usagef("--writers must be between 1 and 256")
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
	f := cmd.Flags()
	f.IntVar(&opts.events, "events", 50000, "backlog drained by the drain and hot-key stages")
	f.IntVar(&opts.aggregates, "aggregates", 5000, "aggregates the drain's backlog is spread over (and the backlog curve's)")
	f.Var(&opts.hotKeys, "hot-keys", "aggregate counts of the hot-key drains, each beside the main drain")
	f.Var(&opts.backlog, "backlog", "backlog sizes drained by the child relay (e.g. 10000,100000,1000000)")
	f.Var(&opts.rates, "rates", "offered event rates of the latency stages")
	f.IntVar(&opts.payload, "payload-bytes", 256, "payload size of the events")
	f.Var(&opts.stage, "stage-seconds", "length of each timed stage: seconds (10, 2.5) or a duration (10s, 500ms)")
	f.IntVar(&opts.writers, "writers", 8, "concurrent writers")
	f.BoolVar(&opts.quick, "quick", false, "small sizes (5,000 events, 2 s stages, a 10,000-event backlog): under a minute on 2 cores")
	f.BoolVar(&opts.json, "json", false, "print one JSON object instead of the table")
	f.StringVar(&opts.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to this file (go tool pprof); the child relay is not in it")
	f.StringVar(&opts.outbox, "outbox", "", "the outbox binary run as the child relay")
	return cmd
}

type benchEnv struct {
	cfg      app.Config
	opts     benchOptions
	source   string
	run      string
	brokers  []string
	embedded *kafka.Embedded
	progress *labcli.Progress
	stderr   io.Writer
	exe      string
	cleanups []func()
	stageSeq int
}

func (e *benchEnv) stage() time.Duration { return time.Duration(e.opts.stage) }

func (e *benchEnv) sqlite() bool { return strings.HasPrefix(e.cfg.Store, "sqlite") }

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func runBench(ctx context.Context, cfg app.Config, opts benchOptions, stderr io.Writer, command string) (*benchReport, error) {
	steps := []struct {
		name string
		fn   func(context.Context, *benchReport) error
	}{
		{"drain", nil}, // set below
		{"hot-key drains", nil},
		{"backlog curve", nil},
		{"write rate without relay", nil},
		{"write rate with relay", nil},
		{"write rate with raw produce", nil},
		{"plain order inserts", nil},
		{"commit to consumer latency at fixed rates", nil},
		{"writes with the broker down", nil},
	}
	e := &benchEnv{cfg: cfg, opts: opts, run: fmt.Sprintf("b%d", time.Now().UnixNano()%1e10), stderr: stderr,
		progress: labcli.NewProgress(stderr, "bench", len(steps)+1)}
	defer e.progress.Done()
	defer func() {
		for _, c := range e.cleanups {
			c()
		}
	}()
	fns := []func(context.Context, *benchReport) error{e.drain, e.hotKeys, e.backlogCurve, e.writeRateWithoutRelay, e.keepUp, e.keepUpRawProduce, e.overhead, e.latency, e.isolation}
	for i := range steps {
		steps[i].fn = fns[i]
	}
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
	e.source = cfg.Source
	if e.source == "" {
		e.source = "poll"
		if strings.HasPrefix(cfg.Store, "postgres") {
			e.source = "cdc"
		}
	}
	rep.Conditions = benchConditions{
		Date: time.Now().UTC().Format(time.RFC3339), Store: strings.SplitN(app.RedactURL(cfg.Store), "?", 2)[0], Source: e.source, Broker: broker,
		PayloadBytes: opts.payload, Events: opts.events, Aggregates: opts.aggregates, Writers: opts.writers,
		StageSeconds: e.stage().Seconds(), Producer: producerConditions(cfg.KafkaLinger), CPUs: runtime.NumCPU(),
		LoadAvg:    loadAvg(),
		ChildRelay: "backlog curve, and latency on PostgreSQL: 'outbox relay' as a child process (CPU from /proc/PID/task/*/schedstat, peak RSS from VmHWM); drain, hot keys, keep-up, isolation, and latency on SQLite: the relay in this process",
		Command:    command,
	}
	if e.source == "poll" {
		rep.Conditions.PollInterval = cfg.PollInterval.String()
	}
	for _, st := range steps {
		e.progress.Step(st.name)
		if err := st.fn(ctx, rep); err != nil {
			return nil, fmt.Errorf("bench %s: %w", st.name, err)
		}
	}
	rep.Drain.LimitPerSec = rep.Drain.RawPerSec
	if rep.Drain.SourceReadPerSec > 0 {
		rep.Drain.LimitPerSec = min(rep.Drain.RawPerSec, rep.Drain.SourceReadPerSec)
	}
	rep.DrainRatio = ratio(rep.Drain.RelayPerSec, rep.Drain.LimitPerSec)
	rep.Drain.ProduceRatio = ratio(rep.Drain.RelayPerSec, rep.Drain.RawPerSec)
	rep.KeepUpRatio = ratio(rep.KeepUp.WithRelayPerSec, rep.KeepUp.WithoutRelayPerSec)
	rep.KeepUpRawRatio = ratio(rep.KeepUp.WithRawProducePerSec, rep.KeepUp.WithoutRelayPerSec)
	rep.OverheadRatio = ratio(rep.Overhead.OutboxPerSec, rep.Overhead.PlainPerSec)
	rep.CPURatio = ratio(rep.CPU.RelayMsPer1000, rep.CPU.RawMsPer1000)
	rep.IsolationRatio = ratio(rep.Isolation.P99DownMs, rep.Isolation.P99UpMs)
	for _, l := range rep.Latency {
		rep.E2EP50Ms, rep.E2EP99Ms = max(rep.E2EP50Ms, l.P50Ms), max(rep.E2EP99Ms, l.P99Ms)
		rep.CPURatioAtRates = max(rep.CPURatioAtRates, l.CPURatio)
	}
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
			// A child relay's walsender may hold the slot a moment after
			// the child exits; a database with a slot cannot be dropped.
			for range 100 {
				var left int
				if admin.QueryRow(bg, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db).Scan(&left) != nil || left == 0 {
					break
				}
				admin.Exec(bg, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, db)
				retry.Wait(bg, 50*time.Millisecond)
			}
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
	// first is when the first acknowledgement came, and this process's
	// CPU time then.
	firstOnce sync.Once
	first     time.Time
	firstCPU  time.Duration
}

func (a *ackCounter) OnPublish(m outbox.Message, _ int, _ time.Duration) {
	now := time.Now()
	a.firstOnce.Do(func() { a.first, a.firstCPU = now, cpuTime() })
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
	pcfg := app.PublisherConfig(e.cfg, brokers, nil)
	pcfg.TopicTemplate = st.topic
	pub, err := kafka.NewPublisher(pcfg)
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

// messages makes n events over aggregates, each aggregate's in sequence,
// with opts.payload-byte payloads; from is the first event's index.
func (e *benchEnv) messages(from, n, aggregates int) ([]outbox.Message, error) {
	pad := strings.Repeat("x", max(e.opts.payload-10, 1))
	msgs := make([]outbox.Message, n)
	for j := range msgs {
		i := from + j
		m, err := outbox.NewMessage("order", fmt.Sprintf("agg-%d", i%aggregates), "OrderUpdated", int64(i/aggregates+1), map[string]string{"p": pad})
		if err != nil {
			return nil, err
		}
		msgs[j] = m
	}
	return msgs, nil
}

// writeBacklog commits n events over aggregates in transactions of 500.
func (e *benchEnv) writeBacklog(ctx context.Context, st *stage, n, aggregates int, progress func(float64)) error {
	for i := 0; i < n; i += 500 {
		msgs, err := e.messages(i, min(500, n-i), aggregates)
		if err != nil {
			return err
		}
		if err := labstore.AppendEvents(ctx, st.store, msgs...); err != nil {
			return err
		}
		progress(float64(i) / float64(n))
	}
	return nil
}

// drain: a backlog emptied by the relay, beside raw produce of the same
// records and a raw read of the same source; CPU per 1,000 events of the
// relay and of raw produce.
func (e *benchEnv) drain(ctx context.Context, rep *benchReport) error {
	relayPerSec, err := e.drainOnce(ctx, e.opts.aggregates, rep)
	rep.Drain.RelayPerSec = relayPerSec
	return err
}

// hotKeys: the same drain with fewer (or more) aggregates, each beside
// the main drain of this run.
func (e *benchEnv) hotKeys(ctx context.Context, rep *benchReport) error {
	rep.HotKeys = nil
	for i, n := range e.opts.hotKeys {
		perSec := rep.Drain.RelayPerSec
		if n != e.opts.aggregates {
			var err error
			if perSec, err = e.drainOnce(ctx, n, nil); err != nil {
				return fmt.Errorf("%d aggregates: %w", n, err)
			}
		}
		rep.HotKeys = append(rep.HotKeys, hotKeyFigure{Aggregates: n, Events: e.opts.events, RelayPerSec: perSec, Ratio: ratio(perSec, rep.Drain.RelayPerSec)})
		e.progress.Frac(float64(i+1) / float64(len(e.opts.hotKeys)))
	}
	rep.HotKeyRatio = 0
	fewest := math.MaxInt
	for _, h := range rep.HotKeys {
		if h.Aggregates == 10 || (h.Aggregates < fewest && !slices.Contains(e.opts.hotKeys, 10)) {
			rep.HotKeyRatio, fewest = h.Ratio, h.Aggregates
		}
	}
	return nil
}

// drainOnce drains opts.events events over aggregates with the relay in
// this process and returns its rate; with rep, it measures the baselines
// too and fills rep.Drain's and rep.CPU's.
func (e *benchEnv) drainOnce(ctx context.Context, aggregates int, rep *benchReport) (float64, error) {
	st, err := e.freshStage(ctx)
	if err != nil {
		return 0, err
	}
	defer st.cleanup()
	// CDC: the slot exists before the backlog (app.Open set it up).
	n := e.opts.events
	msgs, err := e.messages(0, n, aggregates)
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(msgs); i += 500 {
		if err := labstore.AppendEvents(ctx, st.store, msgs[i:min(i+500, len(msgs))]...); err != nil {
			return 0, err
		}
		e.progress.Frac(0.3 * float64(i) / float64(len(msgs)))
	}
	if rep != nil {
		// Baseline: raw franz-go produce of the same records.
		rawPerSec, rawCPU, err := e.rawProduce(ctx, msgs)
		if err != nil {
			return 0, err
		}
		rep.Drain.RawPerSec = round(rawPerSec)
		rep.CPU.RawMsPer1000 = round(float64(rawCPU.Microseconds()) / float64(n))
		e.progress.Frac(0.4)
		// Baseline: a raw read of the same source, publishing nothing.
		if strings.HasPrefix(st.cfg.Store, "postgres") {
			var d time.Duration
			if e.source == "cdc" {
				d, err = rawSlotRead(ctx, st.cfg.Store, st.cfg.Slot, "outbox_pub", n)
				rep.Drain.SourceRead = "the relay's replication slot read with pglogrepl (pgoutput), each insert's columns copied out, nothing published or confirmed"
			} else {
				d, err = rawTableRead(ctx, st.cfg.Store, n)
				rep.Drain.SourceRead = "SELECT * FROM outbox ORDER BY txid, position, every row's columns copied out, nothing published"
			}
			if err != nil {
				return 0, err
			}
			rep.Drain.SourceReadPerSec = round(float64(n) / d.Seconds())
		} else if db, ok := st.store.(interface{ DB() *sql.DB }); ok {
			d, err := rawSQLiteRead(ctx, db.DB(), n)
			if err != nil {
				return 0, err
			}
			rep.Drain.SourceRead = "SELECT every column FROM outbox ORDER BY position, scanned into the source's Go types (modernc.org/sqlite), nothing published"
			rep.Drain.SourceReadPerSec = round(float64(n) / d.Seconds())
		}
		e.progress.Frac(0.5)
	}
	// The relay, on the same broker.
	acks := &ackCounter{target: int64(n), done: make(chan struct{})}
	cpu0, t0 := cpuTime(), time.Now()
	_, stop, err := e.startRelay(ctx, st, e.brokers, acks)
	if err != nil {
		return 0, err
	}
	defer stop()
	select {
	case <-acks.done:
	case <-time.After(10 * time.Minute):
		return 0, errors.New("the relay did not drain the backlog in 10 minutes")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// From the first acknowledgement to the last, as raw produce is timed
	// from its first send with its client connected and its topic made:
	// the relay's start (its connections, the slot) is reported apart.
	relayDur, relayCPU := time.Since(acks.first), cpuTime()-acks.firstCPU
	if rep != nil {
		rep.Drain.StartupMs = round(float64(acks.first.Sub(t0).Microseconds()) / 1000)
		rep.CPU.StartupMs = round(float64((acks.firstCPU - cpu0).Microseconds()) / 1000)
		rep.CPU.RelayMsPer1000 = round(float64(relayCPU.Microseconds()) / float64(n))
		rep.Conditions.Durability = labstore.Durability(ctx, st.store)
		if e.embedded != nil {
			rep.Conditions.Durability["broker"] = "kfake in memory, no fsync"
		} else {
			rep.Conditions.Durability["broker"] = "Kafka defaults (flush by the OS)"
		}
	}
	return round(float64(n) / relayDur.Seconds()), nil
}

// rawProduce sends the records of msgs with a plain franz-go producer
// and returns its rate and CPU.
func (e *benchEnv) rawProduce(ctx context.Context, msgs []outbox.Message) (float64, time.Duration, error) {
	raw, err := e.rawProducer()
	if err != nil {
		return 0, 0, err
	}
	defer raw.Close()
	e.stageSeq++
	rawTopic := fmt.Sprintf("bench.%s_%d.raw", e.run, e.stageSeq)
	// Warm the topic up (auto-creation is not part of the figure).
	if err := raw.ProduceSync(ctx, &kgo.Record{Topic: rawTopic, Value: []byte("warm")}).FirstErr(); err != nil {
		return 0, 0, err
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
		return 0, 0, err
	}
	dur, cpu := time.Since(t0), cpuTime()-cpu0
	if err, _ := produceErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return float64(len(msgs)) / dur.Seconds(), cpu, nil
}

// backlogCurve: for each size, a backlog committed while no relay runs,
// then drained by `outbox relay` in a child process, timed by the
// topic's end offsets.
func (e *benchEnv) backlogCurve(ctx context.Context, rep *benchReport) error {
	rep.Backlog = nil
	for i, n := range e.opts.backlog {
		frac := func(f float64) { e.progress.Frac((float64(i) + f) / float64(len(e.opts.backlog))) }
		b, err := e.backlogOnce(ctx, n, frac)
		if err != nil {
			return fmt.Errorf("%d events: %w", n, err)
		}
		rep.Backlog = append(rep.Backlog, b)
	}
	return nil
}

func (e *benchEnv) backlogOnce(ctx context.Context, n int, frac func(float64)) (backlogFigure, error) {
	st, err := e.freshStage(ctx)
	if err != nil {
		return backlogFigure{}, err
	}
	defer st.cleanup()
	aggregates := min(e.opts.aggregates, n)
	w0 := time.Now()
	if err := e.writeBacklog(ctx, st, n, aggregates, func(f float64) { frac(f / 2) }); err != nil {
		return backlogFigure{}, err
	}
	fig := backlogFigure{Events: n, Aggregates: aggregates, WriteSeconds: round(time.Since(w0).Seconds())}
	adm, err := e.kafkaClient()
	if err != nil {
		return fig, err
	}
	defer adm.Close()
	admin := kadm.NewClient(adm)
	topic := strings.ReplaceAll(st.topic, "{aggregatetype}", "order")
	if err := createTopic(ctx, admin, topic, nil); err != nil {
		return fig, err
	}
	t0 := time.Now()
	child, err := e.startChild(ctx, st)
	if err != nil {
		return fig, err
	}
	defer child.stop()
	var first time.Time
	var cpuFirst time.Duration
	deadline := time.Now().Add(30 * time.Minute)
	for {
		if err := child.failed(); err != nil {
			return fig, err
		}
		got, err := published(ctx, admin, topic)
		if err != nil {
			return fig, err
		}
		if got >= int64(n) {
			if first.IsZero() { // all of it between two looks: count the start in
				first, cpuFirst = t0, 0
			}
			break
		}
		if got > 0 && first.IsZero() {
			first, cpuFirst = time.Now(), child.cpu()
		}
		frac(0.5 + 0.5*float64(got)/float64(n))
		if time.Now().After(deadline) {
			return fig, errChildTimeout
		}
		if err := retry.Wait(ctx, 5*time.Millisecond); err != nil {
			return fig, err
		}
	}
	end, cpu := time.Now(), child.cpu()
	fig.PerSec = round(float64(n) / end.Sub(first).Seconds())
	fig.StartupMs = round(float64(first.Sub(t0).Microseconds()) / 1000)
	fig.PeakRSSMB = round(float64(child.peakRSS()) / (1 << 20))
	fig.CPUMsPer1000 = round(float64((cpu - cpuFirst).Microseconds()) / float64(n))
	return fig, nil
}

func round(f float64) float64 { return math.Round(f*10) / 10 }

// writeLoad runs writers for the stage length and returns the writes per
// second and every write's latency.
func (e *benchEnv) writeLoad(ctx context.Context, write func(context.Context, int) error, pace *pacer) (float64, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, e.stage())
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
				if pace != nil && pace.wait(ctx) != nil {
					return
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
				e.progress.Frac(time.Since(start).Seconds() / e.stage().Seconds())
			}
		})
	}
	wg.Wait()
	return float64(len(lat)) / time.Since(start).Seconds(), lat, firstErr
}

// pacer spreads a rate over the writers: the i-th write of k events is
// due at start + i*k/rate, whichever writer takes it; a writer that is
// late writes at once, so the offered rate is met when the store can.
type pacer struct {
	t0     time.Time
	period time.Duration
	next   atomic.Int64
}

func newPacer(rate, k int) *pacer {
	return &pacer{t0: time.Now(), period: time.Duration(float64(time.Second) * float64(k) / float64(rate))}
}

func (p *pacer) wait(ctx context.Context) error {
	due := p.t0.Add(time.Duration(p.next.Add(1)-1) * p.period)
	if d := time.Until(due); d > 0 {
		return retry.Wait(ctx, d)
	}
	return ctx.Err()
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
			if rep.KeepUp.LagMidEvents == 0 && time.Since(start) >= e.stage()/2 {
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
	// At least 0: a write is counted once its commit returned, which its
	// event's acknowledgement may beat.
	rep.KeepUp.LagEndEvents = max(written.Load()-acks.n.Load(), 0)
	stopSampling()
	<-sampled
	rep.KeepUp.LagMaxEvents = max(lagMax.Load(), rep.KeepUp.LagEndEvents)
	rep.KeepUp.WithRelayPerSec = round(rate)
	rep.KeepUp.LagFlat = float64(rep.KeepUp.LagMaxEvents) <= rate
	rep.Isolation.P99UpMs = percentile(lat, 0.99)
	return err
}

// keepUpRawProduce: the same writers, each write followed by a raw
// produce of one record of an event's size to the same broker
// (rawProducer: the relay's acks and linger) and nothing read from the store:
// what publishing every write as it commits costs this machine, where the
// database, the broker and the writers share it. Polling can do better
// than this: it publishes a poll's events together.
func (e *benchEnv) keepUpRawProduce(ctx context.Context, rep *benchReport) error {
	st, err := e.freshStage(ctx)
	if err != nil {
		return err
	}
	defer st.cleanup()
	raw, err := e.rawProducer()
	if err != nil {
		return err
	}
	defer raw.Close()
	e.stageSeq++
	topic := fmt.Sprintf("bench.%s_%d.raw", e.run, e.stageSeq)
	if err := raw.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("warm")}).FirstErr(); err != nil {
		return err
	}
	pad := strings.Repeat("x", max(e.opts.payload-10, 1))
	create := createOrder(order.NewService(st.store.Orders()))
	var produceErr atomic.Value
	rate, _, err := e.writeLoad(ctx, func(ctx context.Context, i int) error {
		if err := create(ctx, i); err != nil {
			return err
		}
		m, err := outbox.NewMessage("order", fmt.Sprint("o", i), "OrderCreated", 1, map[string]string{"p": pad})
		if err != nil {
			return err
		}
		raw.Produce(ctx, kafka.Record(m, topic), func(_ *kgo.Record, err error) {
			if err != nil && ctx.Err() == nil {
				produceErr.Store(err)
			}
		})
		return nil
	}, nil)
	if err != nil {
		return err
	}
	if err := raw.Flush(ctx); err != nil {
		return err
	}
	if err, _ := produceErr.Load().(error); err != nil {
		return fmt.Errorf("raw produce: %w", err)
	}
	rep.KeepUp.WithRawProducePerSec = round(rate)
	return nil
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

// latency: for each offered rate, `outbox relay` runs as a child process
// while paced writers commit the rate's events, each transaction holding
// events_per_transaction of them (so that 8 writers can offer 20k/s); a
// consumer in this process measures each event from its commit to its
// arrival, on one clock. The relay's CPU per 1,000 events is its own
// (the child's); the baseline is raw produce of the same records at the
// same rate in this process.
func (e *benchEnv) latency(ctx context.Context, rep *benchReport) error {
	rep.Latency = nil
	for i, rate := range e.opts.rates {
		f, err := e.latencyAt(ctx, rate, func(x float64) { e.progress.Frac((float64(i) + x) / float64(len(e.opts.rates))) })
		if err != nil {
			return fmt.Errorf("at %d events/s: %w", rate, err)
		}
		rep.Latency = append(rep.Latency, f)
	}
	return nil
}

func (e *benchEnv) latencyAt(ctx context.Context, rate int, frac func(float64)) (rateFigure, error) {
	// Transactions of k events keep the transaction rate within what the
	// writers can commit: SQLite commits one at a time.
	perTx := 4000
	if e.sqlite() {
		perTx = 1000
	}
	fig := rateFigure{OfferedPerSec: float64(rate), EventsPerTx: (rate + perTx - 1) / perTx}
	st, err := e.freshStage(ctx)
	if err != nil {
		return fig, err
	}
	defer st.cleanup()
	topic := strings.ReplaceAll(st.topic, "{aggregatetype}", "order")
	admc, err := e.kafkaClient()
	if err != nil {
		return fig, err
	}
	defer admc.Close()
	// On Apache Kafka the topic stamps each record with the time the
	// broker appended it (LogAppendTime), so that commit -> append can be
	// told apart from append -> consumer.
	var configs map[string]*string
	if e.embedded == nil {
		logAppend := "LogAppendTime"
		configs = map[string]*string{"message.timestamp.type": &logAppend}
	}
	adm := kadm.NewClient(admc)
	if err := createTopic(ctx, adm, topic, configs); err != nil {
		return fig, err
	}
	partitions, err := partitionCount(ctx, adm, topic)
	if err != nil {
		return fig, err
	}
	var mu sync.Mutex
	seen := map[int32]bool{} // partitions the consumer read a record from
	committedAt := map[string]time.Time{}
	var lat, appendLat []time.Duration
	var consumed atomic.Int64
	// A fetch may wait out its whole FetchMaxWait with records on the
	// broker: with franz-go's default of 5 s (or 1 s, as here until
	// 2026-11-30), one run in two at 5,000 events/s had a commit -> consumer
	// p99 of 0.8 s while commit -> broker append stayed under 30 ms. The
	// relay's latency is the figure; 50 ms keeps the consumer's own waits
	// out of it.
	cons, err := e.kafkaClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return fig, err
	}
	closeConsumer := sync.OnceFunc(cons.Close)
	defer closeConsumer()
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			now := time.Now()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				consumed.Add(1)
				seen[r.Partition] = true
				for _, h := range r.Headers {
					if h.Key == outbox.HeaderID {
						if c, ok := committedAt[string(h.Value)]; ok {
							lat = append(lat, now.Sub(c))
							if configs != nil {
								appendLat = append(appendLat, max(r.Timestamp.Sub(c), 0))
							}
							delete(committedAt, string(h.Value))
						}
						break
					}
				}
			})
			mu.Unlock()
		}
	}()
	defer func() { stopConsumer(); <-consumerDone }()
	// SQLite is written by one process: its writers and its relay share
	// the process (outbox serve), so the relay runs here, and its CPU is
	// not told apart from the writers'.
	var child *childRelay
	if e.sqlite() {
		_, stop, err := e.startRelay(ctx, st, e.brokers)
		if err != nil {
			return fig, err
		}
		defer stop()
	} else {
		if child, err = e.startChild(ctx, st); err != nil {
			return fig, err
		}
		defer child.stop()
	}
	// Warm up: events through every partition before the clock starts
	// (the relay's start, the slot, the topic's metadata are not
	// latency). The consumer may learn of a partition of a topic just
	// made only at its next metadata refresh: a first event on it then
	// waited about a second, and 4 runs in 10 at 1,000 events/s had a p99
	// of 0.65-0.91 s from that, with commit -> append under 10 ms.
	warmed := 0
	for round := 0; ; round++ {
		mu.Lock()
		read := len(seen)
		mu.Unlock()
		if read == partitions {
			break
		}
		if round == 5 {
			return fig, fmt.Errorf("warm-up: the consumer read from %d of the %d partitions of %s", read, partitions, topic)
		}
		// Distinct aggregates, so their keys spread over the partitions.
		warm, err := e.messages(warmed, 8*partitions, 1<<30)
		if err != nil {
			return fig, err
		}
		for i := range warm {
			warm[i].AggregateID = "warm-" + warm[i].AggregateID
		}
		if err := labstore.AppendEvents(ctx, st.store, warm...); err != nil {
			return fig, err
		}
		warmed += len(warm)
		for consumed.Load() < int64(warmed) {
			if child != nil {
				if err := child.failed(); err != nil {
					return fig, err
				}
			}
			if err := retry.Wait(ctx, 10*time.Millisecond); err != nil {
				return fig, err
			}
		}
	}
	k := fig.EventsPerTx
	pace := newPacer(rate, k)
	pad := strings.Repeat("x", max(e.opts.payload-10, 1))
	var written atomic.Int64
	cpu0, t0 := child.cpu(), time.Now()
	_, _, err = e.writeLoad(ctx, func(ctx context.Context, i int) error {
		msgs := make([]outbox.Message, k)
		for j := range msgs {
			m, err := outbox.NewMessage("order", fmt.Sprintf("agg-%d", (i*k+j)%e.opts.aggregates), "OrderUpdated", int64(i*k+j), map[string]string{"p": pad})
			if err != nil {
				return err
			}
			msgs[j] = m
		}
		// Stamp before the commit returns, so an arrival racing it is not
		// lost; the commit itself is then part of the latency, as it should be.
		now := time.Now()
		mu.Lock()
		for _, m := range msgs {
			committedAt[m.ID.String()] = now
		}
		mu.Unlock()
		if err := labstore.AppendEvents(ctx, st.store, msgs...); err != nil {
			mu.Lock()
			for _, m := range msgs {
				delete(committedAt, m.ID.String()) // not committed (the stage ended during it)
			}
			mu.Unlock()
			return err
		}
		now = time.Now()
		mu.Lock()
		for _, m := range msgs {
			if _, pending := committedAt[m.ID.String()]; pending {
				committedAt[m.ID.String()] = now // the commit time, on the same clock
			}
		}
		mu.Unlock()
		written.Add(int64(k))
		return nil
	}, pace)
	if err != nil {
		return fig, err
	}
	dur := time.Since(t0)
	frac(0.6)
	// Let the last events arrive (at most 5 s).
	for i := 0; i < 500 && consumed.Load() < written.Load()+int64(warmed); i++ {
		if err := retry.Wait(ctx, 10*time.Millisecond); err != nil {
			return fig, err
		}
	}
	relayCPU := child.cpu() - cpu0
	mu.Lock()
	samples := slices.Clone(lat)
	appended := slices.Clone(appendLat)
	fig.Lost = len(committedAt)
	mu.Unlock()
	n := written.Load()
	fig.AchievedPerSec = round(float64(n) / dur.Seconds())
	fig.Samples = len(samples)
	fig.P50Ms, fig.P90Ms, fig.P99Ms, fig.MaxMs = percentile(samples, 0.5), percentile(samples, 0.9), percentile(samples, 0.99), percentile(samples, 1)
	fig.AppendP50Ms, fig.AppendP99Ms = percentile(appended, 0.5), percentile(appended, 0.99)
	if child == nil {
		fig.CPUNote = "not measured: on SQLite the relay runs in the writers' process"
		return fig, nil
	}
	if n > 0 {
		fig.RelayCPUPer1000 = round(float64(relayCPU.Microseconds()) / float64(n))
	}
	child.stop()
	stopConsumer()
	<-consumerDone
	closeConsumer()
	// What this process spends doing nothing (its runtime, idle clients)
	// is not raw produce's: measured over 250 ms and taken out.
	idle0, i0 := cpuTime(), time.Now()
	if err := retry.Wait(ctx, 250*time.Millisecond); err != nil {
		return fig, err
	}
	idlePerSec := float64(cpuTime()-idle0) / time.Since(i0).Seconds()
	fig.IdleCPUMsPerSec = round(idlePerSec / 1e6)
	// Baseline: raw produce of the same records at the same rate, for
	// half a stage.
	r0 := time.Now()
	rawCPU, rawN, err := e.rawProduceAt(ctx, rate, k, pad)
	if err != nil {
		return fig, err
	}
	rawCPU -= time.Duration(idlePerSec * time.Since(r0).Seconds())
	fig.RawCPUPer1000 = round(float64(max(rawCPU, 0).Microseconds()) / float64(rawN))
	fig.CPURatio = ratio(fig.RelayCPUPer1000, fig.RawCPUPer1000)
	if e.embedded != nil {
		// The in-process broker's work would be in raw produce's CPU and
		// not in the child relay's.
		fig.CPURatio, fig.CPUNote = 0, "no ratio: raw produce's CPU includes the in-process broker's work, the child relay's does not"
	}
	frac(1)
	return fig, nil
}

// rawProduceAt produces records like the relay's at rate for half a
// stage, k at a time on the writers' schedule, and returns this process's
// CPU and the records sent.
func (e *benchEnv) rawProduceAt(ctx context.Context, rate, k int, pad string) (time.Duration, int, error) {
	raw, err := e.rawProducer()
	if err != nil {
		return 0, 0, err
	}
	defer raw.Close()
	e.stageSeq++
	topic := fmt.Sprintf("bench.%s_%d.rawrate", e.run, e.stageSeq)
	if err := raw.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("warm")}).FirstErr(); err != nil {
		return 0, 0, err
	}
	total := max(int(float64(rate)*e.stage().Seconds()/2), 1)
	records := make([]*kgo.Record, total)
	for i := range records {
		m, err := outbox.NewMessage("order", fmt.Sprintf("agg-%d", i%e.opts.aggregates), "OrderUpdated", int64(i), map[string]string{"p": pad})
		if err != nil {
			return 0, 0, err
		}
		records[i] = kafka.Record(m, topic)
	}
	var produceErr atomic.Value
	cb := func(_ *kgo.Record, err error) {
		if err != nil {
			produceErr.Store(err)
		}
	}
	pace := newPacer(rate, k)
	cpu0 := cpuTime()
	for sent := 0; sent < total; sent += k {
		if err := pace.wait(ctx); err != nil {
			return 0, 0, err
		}
		for _, r := range records[sent:min(sent+k, total)] {
			raw.Produce(ctx, r, cb)
		}
	}
	if err := raw.Flush(ctx); err != nil {
		return 0, 0, err
	}
	cpu := cpuTime() - cpu0
	if err, _ := produceErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return cpu, total, nil
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
	fmt.Fprintf(w, "%d events over %d aggregates, %d-byte payloads, %d writers, %.1f s stages, %s; durability: %s; %d CPUs, load %s at start\n\n",
		c.Events, c.Aggregates, c.PayloadBytes, c.Writers, c.StageSeconds, c.Producer, durabilityText(c.Durability), c.CPUs, c.LoadAvg)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\tbaseline (same run)\tratio")
	limit := fmt.Sprintf("%.0f events/s raw produce", r.Drain.RawPerSec)
	if r.Drain.SourceReadPerSec > 0 {
		limit = fmt.Sprintf("limit %.0f events/s = min(raw produce %.0f, raw source read %.0f)", r.Drain.LimitPerSec, r.Drain.RawPerSec, r.Drain.SourceReadPerSec)
	}
	fmt.Fprintf(tw, "drain\t%.0f events/s (after a %.0f ms start)\t%s\t%.3f\n", r.Drain.RelayPerSec, r.Drain.StartupMs, limit, r.DrainRatio)
	for _, h := range r.HotKeys {
		fmt.Fprintf(tw, "drain, %d aggregates\t%.0f events/s\t%.0f events/s over %d aggregates\t%.3f\n", h.Aggregates, h.RelayPerSec, r.Drain.RelayPerSec, c.Aggregates, h.Ratio)
	}
	for _, b := range r.Backlog {
		fmt.Fprintf(tw, "backlog %d (child relay)\t%.0f events/s, peak RSS %.1f MB, %.1f ms CPU per 1,000\tstartup %.0f ms; written in %.1f s\t\n",
			b.Events, b.PerSec, b.PeakRSSMB, b.CPUMsPer1000, b.StartupMs, b.WriteSeconds)
	}
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "commit->consumer at %.0f/s\tp50 %.1f ms, p90 %.1f, p99 %.1f, max %.1f (%d samples, %.0f/s achieved, %d per tx, %d not consumed)\t\t\n",
			l.OfferedPerSec, l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs, l.Samples, l.AchievedPerSec, l.EventsPerTx, l.Lost)
		if l.AppendP99Ms > 0 {
			fmt.Fprintf(tw, "commit->broker append at %.0f/s\tp50 %.1f ms, p99 %.1f (LogAppendTime)\t\t\n", l.OfferedPerSec, l.AppendP50Ms, l.AppendP99Ms)
		}
		switch {
		case l.RelayCPUPer1000 == 0 && l.CPUNote != "":
			fmt.Fprintf(tw, "cpu at %.0f/s\t%s\t\t\n", l.OfferedPerSec, l.CPUNote)
		case l.CPUNote != "":
			fmt.Fprintf(tw, "cpu at %.0f/s (child relay)\t%.1f ms per 1,000 events relay\t%.1f ms raw produce at the same rate\t%s\n",
				l.OfferedPerSec, l.RelayCPUPer1000, l.RawCPUPer1000, l.CPUNote)
		default:
			fmt.Fprintf(tw, "cpu at %.0f/s (child relay)\t%.1f ms per 1,000 events relay\t%.1f ms raw produce at the same rate\t%.3f\n",
				l.OfferedPerSec, l.RelayCPUPer1000, l.RawCPUPer1000, l.CPURatio)
		}
	}
	flat := "lag flat"
	if !r.KeepUp.LagFlat {
		flat = "lag GROWS"
	}
	fmt.Fprintf(tw, "keep-up\t%.0f writes/s with relay (%s: %d mid, %d max, %d end)\t%.0f writes/s without\t%.3f\n",
		r.KeepUp.WithRelayPerSec, flat, r.KeepUp.LagMidEvents, r.KeepUp.LagMaxEvents, r.KeepUp.LagEndEvents, r.KeepUp.WithoutRelayPerSec, r.KeepUpRatio)
	fmt.Fprintf(tw, "keep-up, raw produce\t%.0f writes/s, each then produced raw\t%.0f writes/s without\t%.3f\n",
		r.KeepUp.WithRawProducePerSec, r.KeepUp.WithoutRelayPerSec, r.KeepUpRawRatio)
	fmt.Fprintf(tw, "overhead\t%.0f writes/s, p50 %.2f ms order+outbox\t%.0f inserts/s, p50 %.2f ms plain\t%.3f\n",
		r.Overhead.OutboxPerSec, r.Overhead.OutboxP50Ms, r.Overhead.PlainPerSec, r.Overhead.PlainP50Ms, r.OverheadRatio)
	fmt.Fprintf(tw, "cpu in the drain\t%.1f ms per 1,000 events relay\t%.1f ms raw producer\t%.3f\n", r.CPU.RelayMsPer1000, r.CPU.RawMsPer1000, r.CPURatio)
	fmt.Fprintf(tw, "isolation\twrite p99 %.2f ms broker down\t%.2f ms broker up\t%.3f\n", r.Isolation.P99DownMs, r.Isolation.P99UpMs, r.IsolationRatio)
	tw.Flush()
	if c.PollInterval != "" {
		fmt.Fprintf(w, "\npoll interval %s\n", c.PollInterval)
	}
	fmt.Fprintf(w, "\nreproduce: %s\n", c.Command)
}

// durabilityText lists settings as "name value; name value", sorted by
// name, for people (the JSON keeps the map); values may hold commas.
func durabilityText(d map[string]string) string {
	parts := make([]string, 0, len(d))
	for _, k := range slices.Sorted(maps.Keys(d)) {
		parts = append(parts, k+" "+d[k])
	}
	return strings.Join(parts, "; ")
}

// producerConditions describes the producer of the relay and of the
// raw-produce baselines (rawProducer).
func producerConditions(linger time.Duration) string {
	l := linger.String()
	if linger == 0 {
		l = "0"
	}
	return fmt.Sprintf("franz-go, idempotent, acks=all, linger %s (the relay and the raw producers)", l)
}
