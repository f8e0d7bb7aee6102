// Command peers compares the outbox relay with two peers, Debezium's
// embedded engine with the outbox EventRouter and Watermill's forwarder, on
// the same PostgreSQL and the same Apache Kafka, rounds interleaved, and
// writes a markdown table and a JSON file. README.md beside this module
// says what each figure means; run.sh runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rounds        int
	quick         bool
	events        int
	aggregates    int
	hotAggregates int
	rates         []int
	rateDuration  time.Duration
	rateWarmup    time.Duration
	outboxRev     string
	payloadBytes  int
	writers       int
	systems       []string
	scenarios     []string
	pgDSN         string
	brokers       string
	outboxBin     string
	forwarderBin  string
	debeziumDir   string
	workDir       string
	outJSON       string
	outMD         string
	partitions    int
}

func main() {
	var o options
	var rates, systems, scenarios string
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every scenario for every system, interleaved")
	flag.BoolVar(&o.quick, "quick", false, "a check that everything works: 1 round, 10,000 events, 10 s per rate")
	flag.IntVar(&o.events, "events", 50000, "events in each drain backlog")
	flag.IntVar(&o.aggregates, "aggregates", 5000, "aggregates of the drain and the fixed-rate runs")
	flag.IntVar(&o.hotAggregates, "hot-aggregates", 10, "aggregates of the hot-key drain")
	flag.StringVar(&rates, "rates", "1000,5000", "fixed write rates, events/s, one event per transaction")
	flag.DurationVar(&o.rateDuration, "rate-duration", 20*time.Second, "how long each fixed rate is written")
	flag.DurationVar(&o.rateWarmup, "rate-warmup", 5*time.Second, "written at the rate before each measured window, not counted (whole seconds)")
	flag.StringVar(&o.outboxRev, "outbox-rev", "", "the outbox revision measured (for the report)")
	flag.IntVar(&o.payloadBytes, "payload", 300, "JSON payload size in bytes")
	flag.IntVar(&o.writers, "writers", 8, "writer connections of the fixed-rate runs (each owns a share of the aggregates)")
	flag.IntVar(&o.partitions, "partitions", 3, "partitions of each target topic (created before each run)")
	flag.StringVar(&systems, "systems", "outbox-cdc,outbox-poll,debezium,watermill,debezium-100ms,watermill-100ms", "systems to compare, in this order within each round: outbox-cdc, outbox-poll, debezium, watermill, and debezium-100ms, watermill-100ms (the peers with their poll interval lowered to 100 ms), outbox-cdc-linger5ms (outbox with Debezium's producer linger), outbox-cdc-linger5ms-1cpu (the same with GOMAXPROCS=1)")
	flag.StringVar(&scenarios, "scenarios", "drain,hotkey,rate", "scenarios: drain, hotkey, rate")
	flag.StringVar(&o.pgDSN, "pg", os.Getenv("OUTBOX_TEST_PG_DSN"), "superuser DSN of a PostgreSQL with wal_level=logical (any database; each run creates its own)")
	flag.StringVar(&o.brokers, "brokers", os.Getenv("OUTBOX_TEST_KAFKA_BROKERS"), "Kafka brokers")
	flag.StringVar(&o.outboxBin, "outbox", "", "the outbox binary (go build -o ... ./cmd/outbox)")
	flag.StringVar(&o.forwarderBin, "forwarder", "", "the watermill-forwarder binary")
	flag.StringVar(&o.debeziumDir, "debezium", "", "the Debezium peer's Maven project, built (target/classes, target/deps)")
	flag.StringVar(&o.workDir, "work", "", "directory for logs and offsets")
	flag.StringVar(&o.outJSON, "json", "", "write results as JSON here")
	flag.StringVar(&o.outMD, "md", "", "write the markdown report here")
	fromJSON := flag.String("from-json", "", "only render the markdown of a saved JSON result (to -md, and stdout)")
	flag.Parse()
	if *fromJSON != "" {
		b, err := os.ReadFile(*fromJSON)
		if err != nil {
			fatalf("%v", err)
		}
		var rep report
		if err := json.Unmarshal(b, &rep); err != nil {
			fatalf("%s: %v", *fromJSON, err)
		}
		o.outJSON = ""
		writeOutputs(&o, &rep)
		return
	}
	if o.quick {
		o.rounds = 1
		o.events = 10000
		o.rateDuration = 10 * time.Second
		o.rateWarmup = 3 * time.Second
	}
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fatalf("bad -rates %q", rates)
		}
		o.rates = append(o.rates, n)
	}
	o.systems = splitList(systems)
	o.scenarios = splitList(scenarios)
	for _, s := range o.systems {
		if _, err := newSystem(s, &o); err != nil {
			fatalf("%v", err)
		}
	}
	if o.pgDSN == "" || o.brokers == "" {
		fatalf("need -pg and -brokers (or OUTBOX_TEST_PG_DSN and OUTBOX_TEST_KAFKA_BROKERS)")
	}
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "peers-")
		if err != nil {
			fatalf("%v", err)
		}
		o.workDir = d
	}
	if err := os.MkdirAll(o.workDir, 0o755); err != nil {
		fatalf("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runAll(ctx, &o)
	if rep != nil {
		writeOutputs(&o, rep)
	}
	if err != nil {
		fatalf("%v", err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "peers: "+format+"\n", a...)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// scenario is one measured run of a system.
type scenario struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // drain or rate
	Events     int    `json:"events,omitempty"`
	Aggregates int    `json:"aggregates"`
	Rate       int    `json:"rate,omitempty"`
	Seconds    int    `json:"seconds,omitempty"`
}

func scenarios(o *options) []scenario {
	var out []scenario
	for _, s := range o.scenarios {
		switch s {
		case "drain":
			out = append(out, scenario{Name: "drain", Kind: "drain", Events: o.events, Aggregates: o.aggregates})
		case "hotkey":
			out = append(out, scenario{Name: "hotkey", Kind: "drain", Events: o.events, Aggregates: o.hotAggregates})
		case "rate":
			for _, r := range o.rates {
				out = append(out, scenario{Name: fmt.Sprintf("rate%d", r), Kind: "rate", Aggregates: o.aggregates, Rate: r, Seconds: int(o.rateDuration / time.Second)})
			}
		default:
			fatalf("unknown scenario %q", s)
		}
	}
	return out
}

type report struct {
	RunID      string            `json:"run_id"`
	Started    time.Time         `json:"started"`
	Finished   time.Time         `json:"finished"`
	Options    optionsOut        `json:"options"`
	Conditions conditions        `json:"conditions"`
	Scenarios  []scenario        `json:"scenarios"`
	Notes      map[string]string `json:"configuration"`
	Results    []*result         `json:"results"`
	Summary    []summary         `json:"summary"`
}

type optionsOut struct {
	Rounds       int      `json:"rounds"`
	Quick        bool     `json:"quick"`
	Events       int      `json:"events"`
	Aggregates   int      `json:"aggregates"`
	HotAggs      int      `json:"hot_aggregates"`
	Rates        []int    `json:"rates"`
	RateSeconds  int      `json:"rate_seconds"`
	WarmSeconds  int      `json:"rate_warmup_seconds"`
	PayloadBytes int      `json:"payload_bytes"`
	Writers      int      `json:"writers"`
	Partitions   int      `json:"partitions"`
	Systems      []string `json:"systems"`
}

func runAll(ctx context.Context, o *options) (*report, error) {
	runID := fmt.Sprintf("%x", time.Now().Unix()%0xffffff)
	rep := &report{RunID: runID, Started: time.Now().UTC(), Scenarios: scenarios(o),
		Options: optionsOut{Rounds: o.rounds, Quick: o.quick, Events: o.events, Aggregates: o.aggregates, HotAggs: o.hotAggregates,
			Rates: o.rates, RateSeconds: int(o.rateDuration / time.Second), WarmSeconds: int(o.rateWarmup / time.Second), PayloadBytes: o.payloadBytes, Writers: o.writers,
			Partitions: o.partitions, Systems: o.systems}}
	rep.Notes = map[string]string{}
	for _, s := range o.systems {
		sys, _ := newSystem(s, o)
		rep.Notes[s] = sys.Note()
	}
	env, err := newEnv(ctx, o, runID)
	if err != nil {
		return nil, err
	}
	defer env.close()
	rep.Conditions = gatherConditions(ctx, env)
	logf("run %s: %d round(s) of %v × %v; work dir %s", runID, o.rounds, o.systems, names(rep.Scenarios), o.workDir)

	for round := 1; round <= o.rounds; round++ {
		for _, sc := range rep.Scenarios {
			for _, sysName := range o.systems {
				if ctx.Err() != nil {
					rep.Finished = time.Now().UTC()
					rep.Summary = summarize(rep)
					return rep, ctx.Err()
				}
				// The 100 ms variants differ from the peers' defaults only
				// when the relay is idle between events: they run the
				// fixed rates only.
				if strings.HasSuffix(sysName, "-100ms") && sc.Kind == "drain" {
					continue
				}
				sys, _ := newSystem(sysName, o)
				for _, res := range runOne(ctx, env, sys, round, sc) {
					rep.Results = append(rep.Results, res)
					if !res.Disrupted {
						logf("%s", res.line())
					}
				}
				// Keep partial results on disk as we go.
				if o.outJSON != "" {
					rep.Summary = summarize(rep)
					writeJSON(o.outJSON+".partial", rep)
				}
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Summary = summarize(rep)
	if o.outJSON != "" {
		_ = os.Remove(o.outJSON + ".partial")
	}
	return rep, nil
}

func names(sc []scenario) []string {
	var out []string
	for _, s := range sc {
		out = append(out, s.Name)
	}
	return out
}

func writeJSON(path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		logf("json: %v", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		logf("json: %v", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		logf("json: %v", err)
	}
}

func writeOutputs(o *options, rep *report) {
	md := markdown(rep)
	if o.outJSON != "" {
		writeJSON(o.outJSON, rep)
	}
	if o.outMD != "" {
		if err := os.WriteFile(o.outMD, []byte(md), 0o644); err != nil {
			logf("md: %v", err)
		}
	}
	fmt.Print(md)
}
