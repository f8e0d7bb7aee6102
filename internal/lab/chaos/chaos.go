package chaos

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
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labcli"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
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
	outbox    string // the product binary the scenarios run as child processes
	logOutput io.Writer
}

// Command is `outbox-lab chaos`.
func Command(stdout, stderr io.Writer) *cobra.Command {
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
1 when any invariant breaks. It prints one line per scenario, its verdict
first, and one overall line last ("chaos: 16/16 scenarios ok on
sqlite+kfake"). --quick shrinks every scenario: a minute to a minute and a
half per target (78 s on SQLite + kfake, 2 busy cores), 3-4 minutes on the
ScyllaDB emulation.`,
		Args: labcli.NoArgs,
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
				return app.Usagef("--postgres or --scylla and --kafka go together")
			}
			if opts.postgres != "" && !strings.HasPrefix(opts.postgres, "postgres://") && !strings.HasPrefix(opts.postgres, "postgresql://") {
				return app.Usagef("--postgres must be a postgres:// URL")
			}
			if strings.ContainsAny(opts.scylla, "/?@ ") {
				return app.Usagef("--scylla takes hosts (host:port,host:port), not a URL: each scenario gets its own keyspace")
			}
			var picked []scenario
			for _, s := range scenarios() {
				if opts.only == "" || slices.Contains(strings.Split(strings.ToUpper(opts.only), ","), s.id) {
					picked = append(picked, s)
				}
			}
			if len(picked) == 0 {
				return app.Usagef("--scenario %q names no scenario (R1 to R16)", opts.only)
			}
			exe, cleanup, err := labcli.OutboxBinary(cmd.Context(), opts.outbox, "chaos", stderr)
			if err != nil {
				return err
			}
			defer cleanup()
			opts.outbox = exe
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
	f.StringVar(&opts.outbox, "outbox", "", "the outbox binary the scenarios run (default: one beside this binary, then on PATH, else built from this module with go build)")
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
		return app.Usagef("nothing to run: --embedded=false needs --postgres or --scylla, with --kafka")
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
			switch {
			case len(res.Failures) > 0:
				verdict = "FAILED: " + strings.Join(res.Failures, "; ")
			case res.Skipped != "":
				verdict = "SKIPPED (counts as a failure): " + res.Skipped
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
		fmt.Fprintln(stderr, overall(results)) // stdout is the JSON alone
	} else {
		printChaos(stdout, results)
	}
	for _, r := range results {
		if !r.OK() {
			return app.ExitCode(1)
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
	r, err := newChaosRun(runCtx, t, s.id, opts.outbox, seed, opts.quick, opts.logOutput)
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
		if committed, err := labstore.Committed(ctx, r.db); err == nil {
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

// printChaos prints the results compactly (under 120 columns): one line
// per scenario that starts with its verdict, the invariants and figures
// wrapped under it, and one overall line last.
func printChaos(w io.Writer, results []*scenarioResult) {
	const width, indent = 110, "            "
	fmt.Fprintln(w, "verdict     scenario (lost, phantom and order must be 0; duplicates are reported)")
	target := ""
	for _, r := range results {
		if r.Target != target {
			target = r.Target
			fmt.Fprintf(w, "%s\n", target)
		}
		verdict := "ok"
		switch {
		case r.Skipped != "":
			verdict = "SKIPPED"
		case !r.OK():
			verdict = "FAILED"
		}
		fmt.Fprintf(w, "  %-9s %-4s %s (%.1f s)\n", verdict, r.ID, r.Name, r.Seconds)
		if r.Skipped != "" {
			writeWrapped(w, indent, width, "skipped (counts as a failure): "+r.Skipped)
			continue
		}
		for _, f := range r.Failures {
			writeWrapped(w, indent, width, "FAILED: "+f)
		}
		rep := r.Report
		parts := []string{fmt.Sprintf("lost %d, phantom %d, order %d, dup %d", rep.Lost, rep.Phantom, rep.Order, rep.Dup)}
		if rep.Dup > 0 {
			parts[0] += fmt.Sprintf(" (max %d copies)", rep.MaxCopies)
		}
		for _, c := range []struct {
			name string
			n    int
		}{{"corrupt", rep.Corrupt}, {"parking", rep.Parking}, {"unexpected dead", rep.UnexpectedDead}, {"acked without event", r.Missing}} {
			if c.n != 0 {
				parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
			}
		}
		chunks := []string{strings.Join(parts, ", ")}
		for _, k := range slices.Sorted(maps.Keys(r.Figures)) {
			chunks = append(chunks, fmt.Sprintf("%s=%v", k, r.Figures[k]))
		}
		writeWrapped(w, indent, width, chunks...)
	}
	for _, r := range results {
		if r.Figures["cluster"] == "emulation" {
			fmt.Fprintf(w, "\n%s ran on the ScyllaDB CDC emulation (Apache Cassandra 5 with a CDC-log trigger behind a CQL proxy, read by\n"+
				"the real driver and scylla-cdc-go), not on ScyllaDB: its figures are the emulation's (DESIGN.md, \"Tested on an\n"+
				"emulation of ScyllaDB CDC\").\n", r.Target)
			break
		}
	}
	fmt.Fprintln(w, overall(results))
}

// overall is the run's one-line verdict: "chaos: 16/16 scenarios ok on
// sqlite+kfake" or "chaos: FAILED: R2 on postgres+kafka; R5 (skipped) on
// sqlite+kfake (30/32 ok)".
func overall(results []*scenarioResult) string {
	var targets []string
	bad := map[string][]string{}
	ok := 0
	for _, r := range results {
		if !slices.Contains(targets, r.Target) {
			targets = append(targets, r.Target)
		}
		switch {
		case r.OK():
			ok++
		case r.Skipped != "":
			bad[r.Target] = append(bad[r.Target], r.ID+" (skipped)")
		default:
			bad[r.Target] = append(bad[r.Target], r.ID)
		}
	}
	if ok == len(results) {
		return fmt.Sprintf("chaos: %d/%d scenarios ok on %s", ok, len(results), strings.Join(targets, ", "))
	}
	var failed []string
	for _, t := range targets {
		if len(bad[t]) > 0 {
			failed = append(failed, strings.Join(bad[t], ", ")+" on "+t)
		}
	}
	return fmt.Sprintf("chaos: FAILED: %s (%d/%d scenarios ok)", strings.Join(failed, "; "), ok, len(results))
}

// writeWrapped writes the chunks after indent, two spaces apart, wrapped
// between chunks to width columns (a chunk too long for a line is
// wrapped between its words).
func writeWrapped(w io.Writer, indent string, width int, chunks ...string) {
	line := indent
	for _, c := range chunks {
		words := []string{c}
		if utf8.RuneCountInString(indent+c) > width {
			words = strings.Fields(c)
		}
		for i, word := range words {
			sep := " "
			if i == 0 {
				sep = "  "
			}
			if line != indent && utf8.RuneCountInString(line+sep+word) > width {
				fmt.Fprintln(w, line)
				line = indent
			}
			if line != indent {
				line += sep
			}
			line += word
		}
	}
	if line != indent {
		fmt.Fprintln(w, line)
	}
}
