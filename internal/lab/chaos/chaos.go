package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outbox-dev/outbox/checker"
)

type chaosOptions struct {
	quick     bool
	seed      uint64
	only      string
	jsonOut   bool
	history   string
	postgres  string
	scylla    string
	kafka     string
	pgCtl     string
	kafkaCtl  string
	cassCtl   string
	pollToo   bool
	embedded  bool
	logOutput io.Writer
}

func chaosCmd(stdout, stderr io.Writer) *cobra.Command {
	opts := chaosOptions{logOutput: stderr}
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Run the fault matrix (R1–R16) against the real binary and check every invariant",
		Long: `chaos runs the reliability scenarios R1–R16 with fixed seeds: the relay
SIGKILLed as a child process, worker panics, broker outages, lost
acknowledgements, a hard database stop, a slow broker (toxiproxy), poison
events, a lost position, and fuzzed HTTP input. Each scenario gets a fresh
store and fresh topics, records what was committed, reads every topic back
and checks: lost, phantom and order must be 0; duplicates are reported.

It always runs against SQLite and the in-process broker. With --postgres
and --kafka (or OUTBOX_CHAOS_POSTGRES and OUTBOX_CHAOS_KAFKA) it runs
again against PostgreSQL and Apache Kafka. With --scylla and --kafka (or
OUTBOX_CHAOS_SCYLLA) it runs against ScyllaDB CDC and Apache Kafka: a
fresh keyspace per scenario (rf=1, the low-latency profile, a 2 s lease),
dropped afterwards; --cassandra-ctl lets R6 stop the node hard. It exits
1 when any invariant breaks. --quick shrinks every scenario (about two
minutes per target, three on ScyllaDB).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.postgres == "" {
				opts.postgres = os.Getenv("OUTBOX_CHAOS_POSTGRES")
			}
			if opts.kafka == "" {
				opts.kafka = os.Getenv("OUTBOX_CHAOS_KAFKA")
			}
			if opts.pgCtl == "" {
				opts.pgCtl = os.Getenv("OUTBOX_CHAOS_PG_CTL")
			}
			if opts.kafkaCtl == "" {
				opts.kafkaCtl = os.Getenv("OUTBOX_CHAOS_KAFKA_CTL")
			}
			if opts.scylla == "" {
				opts.scylla = os.Getenv("OUTBOX_CHAOS_SCYLLA")
			}
			if opts.cassCtl == "" {
				opts.cassCtl = os.Getenv("OUTBOX_CHAOS_CASSANDRA_CTL")
			}
			if (opts.postgres != "" || opts.scylla != "") != (opts.kafka != "") {
				return usagef("--postgres or --scylla and --kafka go together")
			}
			if opts.postgres != "" && !strings.HasPrefix(opts.postgres, "postgres://") && !strings.HasPrefix(opts.postgres, "postgresql://") {
				return usagef("--postgres must be a postgres:// URL")
			}
			if strings.ContainsAny(opts.scylla, "/?@ ") {
				return usagef("--scylla takes hosts (host:port,host:port), not a URL: each scenario gets its own keyspace")
			}
			var picked []scenario
			for _, s := range scenarios() {
				if opts.only == "" || slices.Contains(strings.Split(strings.ToUpper(opts.only), ","), s.id) {
					picked = append(picked, s)
				}
			}
			if len(picked) == 0 {
				return usagef("--scenario %q names no scenario (R1 to R16)", opts.only)
			}
			return runChaos(cmd.Context(), opts, picked, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.quick, "quick", false, "small runs of every scenario (for CI)")
	f.Uint64Var(&opts.seed, "seed", 1, "seed of every random choice")
	f.StringVar(&opts.only, "scenario", "", "comma-separated scenarios to run (default all), e.g. R2,R5")
	f.BoolVar(&opts.jsonOut, "json", false, "print the results as JSON")
	f.StringVar(&opts.history, "history", "", "directory to write each scenario's history (JSON lines) and figures to")
	f.StringVar(&opts.postgres, "postgres", "", "PostgreSQL URL (wal_level=logical) of a user who may create databases: also run against PostgreSQL + Kafka")
	f.StringVar(&opts.scylla, "scylla", "", "ScyllaDB hosts (host:port,...; the CDC emulation's proxy in CI): also run against ScyllaDB CDC + Kafka")
	f.StringVar(&opts.kafka, "kafka", "", "Apache Kafka brokers for the PostgreSQL and ScyllaDB runs")
	f.StringVar(&opts.pgCtl, "pg-ctl", "", "script taking stop-immediate|start for PostgreSQL (R6)")
	f.StringVar(&opts.kafkaCtl, "kafka-ctl", "", "script taking kill|start for the Kafka broker (R12)")
	f.StringVar(&opts.cassCtl, "cassandra-ctl", "", "script taking kill|start for the Cassandra node under the ScyllaDB emulation (R6 on --scylla)")
	f.BoolVar(&opts.pollToo, "poll", true, "with --postgres, also run against PostgreSQL read by polling")
	f.BoolVar(&opts.embedded, "embedded", true, "run against SQLite and the in-process broker")
	return cmd
}

func runChaos(ctx context.Context, opts chaosOptions, picked []scenario, stdout, stderr io.Writer) error {
	var targets []chaosTarget
	if opts.embedded {
		targets = append(targets, chaosTarget{name: "sqlite+kfake"})
	}
	if opts.postgres != "" {
		pg := chaosTarget{name: "postgres+kafka", pgDSN: opts.postgres, pgCtl: opts.pgCtl, kafkaCtl: opts.kafkaCtl, brokers: strings.Split(opts.kafka, ",")}
		targets = append(targets, pg)
		if opts.pollToo {
			pg.name, pg.source = "postgres-poll+kafka", "poll"
			targets = append(targets, pg)
		}
	}
	if opts.scylla != "" {
		targets = append(targets, chaosTarget{name: "scylla+kafka", scylla: opts.scylla, cassandraCtl: opts.cassCtl, kafkaCtl: opts.kafkaCtl,
			brokers: strings.Split(opts.kafka, ",")})
	}
	if len(targets) == 0 {
		return usagef("nothing to run: --embedded=false needs --postgres or --scylla, with --kafka")
	}
	if opts.history != "" {
		if err := os.MkdirAll(opts.history, 0o755); err != nil {
			return err
		}
	}
	var results []*scenarioResult
	for _, t := range targets {
		for i, s := range picked {
			seed := opts.seed*1000 + uint64(i)
			fmt.Fprintf(stderr, "chaos: %s %s (%s) seed %d ...\n", t.name, s.id, s.name, seed)
			res := runScenario(ctx, t, s, seed, opts)
			results = append(results, res)
			verdict := "ok"
			if !res.OK() {
				verdict = "FAILED: " + strings.Join(res.Failures, "; ")
			} else if res.Skipped != "" {
				verdict = "skipped: " + res.Skipped
			}
			fmt.Fprintf(stderr, "chaos: %s %s %s in %.1fs\n", t.name, s.id, verdict, res.Seconds)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if opts.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results)
	} else {
		printChaos(stdout, results)
	}
	for _, r := range results {
		if !r.OK() {
			return exitCode(1)
		}
	}
	return nil
}

func runScenario(ctx context.Context, t chaosTarget, s scenario, seed uint64, opts chaosOptions) (res *scenarioResult) {
	res = &scenarioResult{ID: s.id, Name: s.name, Target: t.name, Seed: seed, Figures: map[string]any{}}
	start := time.Now()
	defer func() { res.Seconds = round(time.Since(start).Seconds()) }()
	budget := 5 * time.Minute
	if !opts.quick {
		budget = 20 * time.Minute
	}
	runCtx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	r, err := newChaosRun(runCtx, t, s.id, seed, opts.quick, opts.logOutput)
	if err != nil {
		res.fail("setup: %v", err)
		return res
	}
	defer r.Close()
	if r.cluster != "" {
		res.Figures["cluster"] = r.cluster
	}
	defer func() {
		if p := recover(); p != nil {
			res.fail("scenario panicked: %v", p)
		}
	}()
	if err := s.run(r, res); err != nil {
		res.fail("%v", err)
	}
	if opts.history != "" {
		res.Seconds = round(time.Since(start).Seconds()) // the deferred one comes too late for the file
		writeHistory(r, res, filepath.Join(opts.history, fmt.Sprintf("%s-%s", t.name, s.id)))
	}
	return res
}

// writeHistory saves what was committed (the history the checker used)
// and the figures, so a failed run can be examined.
func writeHistory(r *chaosRun, res *scenarioResult, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f, err := os.Create(base + ".history.jsonl"); err == nil {
		rec := checker.NewRecorder(f)
		if committed, err := r.db.committed(ctx); err == nil {
			for _, e := range committed {
				rec.Record(e)
			}
		}
		f.Close()
	}
	if b, err := json.MarshalIndent(res, "", "  "); err == nil {
		os.WriteFile(base+".result.json", b, 0o644)
	}
}

func printChaos(w io.Writer, results []*scenarioResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tscenario\tlost\tphantom\torder\tcorrupt\tparking\tunexp. dead\tdup (max copies)\tacked w/o event\tfigures\tverdict")
	for _, r := range results {
		verdict := "ok"
		switch {
		case r.Skipped != "":
			verdict = "skipped (" + r.Skipped + ")"
		case !r.OK():
			verdict = "FAILED: " + strings.Join(r.Failures, "; ")
		}
		var figs []string
		for _, k := range slices.Sorted(maps.Keys(r.Figures)) {
			figs = append(figs, fmt.Sprintf("%s=%v", k, r.Figures[k]))
		}
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s %s\t-\t-\t-\t-\t-\t-\t-\t-\t\t%s\n", r.Target, r.ID, r.Name, verdict)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%d)\t%d\t%s\t%s\n", r.Target, r.ID, r.Name, r.Report.Lost, r.Report.Phantom,
			r.Report.Order, r.Report.Corrupt, r.Report.Parking, r.Report.UnexpectedDead, r.Report.Dup, r.Report.MaxCopies, r.Missing, strings.Join(figs, " "), verdict)
	}
	tw.Flush()
	for _, r := range results {
		if r.Figures["cluster"] == "emulation" {
			fmt.Fprintf(w, "\n%s ran on the ScyllaDB CDC emulation (Apache Cassandra 5 with a CDC-log trigger behind a CQL proxy, read by the real driver\n"+
				"and scylla-cdc-go), not on ScyllaDB: its figures are the emulation's (DESIGN.md, \"Tested on an emulation of ScyllaDB CDC\").\n", r.Target)
			break
		}
	}
}
