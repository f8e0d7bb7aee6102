package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	return app.Root("outbox", "Transactional outbox: write the order and its event atomically, relay events to Kafka",
		`outbox writes each order change and its event in one transaction and relays
the events to Kafka, in order per order, at least once, with retries, a
circuit breaker and a dead-letter queue.

Every flag can also be set as an OUTBOX_* environment variable
(--poll-interval is OUTBOX_POLL_INTERVAL) or as a key of the JSON file given
with --config; a flag on the command line wins, then the environment, then
the file. Secrets come from the environment only: OUTBOX_ADMIN_TOKEN and
OUTBOX_ALERT_WEBHOOK_URL, or files named by OUTBOX_ADMIN_TOKEN_FILE and
OUTBOX_ALERT_WEBHOOK_URL_FILE.

The demo, the benchmark and the fault matrix are in the lab binary:
go run ./cmd/outbox-lab --help.`, stdout, stderr,
		serveCmd(stderr), relayCmd(stderr), brokerCmd(stdout, stderr), dlqCmd(stdout), migrateCmd(stdout), versionCmd(stdout))
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return app.Usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func serveCmd(stderr io.Writer) *cobra.Command {
	var cfg app.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the order API and the relay under one supervisor",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveApp(cmd, &cfg, stderr, app.Options{HTTP: true})
		},
	}
	cfg.AddFlags(cmd.Flags())
	cfg.AddHTTPFlags(cmd.Flags())
	return cmd
}

func relayCmd(stderr io.Writer) *cobra.Command {
	var cfg app.Config
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run only the relay (with its health checker and dead-letter worker)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveApp(cmd, &cfg, stderr, app.Options{RelayOnly: true})
		},
	}
	cfg.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&cfg.HTTP, "http", "", "serve /status, /metrics, /healthz, /readyz, /dlq and the web console (/ui) on this address (default: none); beyond loopback it needs OUTBOX_ADMIN_TOKEN")
	cfg.AddMappingFlags(cmd.Flags())
	// The relay publishes to --brokers, never to an embedded broker: hidden,
	// still accepted (one config file serves every command).
	cmd.Flags().MarkHidden("broker-port")
	cmd.Flags().Lookup("brokers").Usage = "Kafka brokers host:port,... (required: the relay publishes to an existing Kafka)"
	cmd.Flags().Lookup("idempotency-ttl").Usage = "when the store has the order service's tables: how long an Idempotency-Key is kept before the relay's cleaner deletes it"
	cmd.Flags().Lookup("retention").Usage = "PostgreSQL: delete acknowledged outbox rows older than this (0 keeps them; off with --mapping: a table of yours is never deleted from)"
	cmd.Flags().Lookup("topic-template").Usage = "topic routing: {aggregatetype} and {type} are replaced; {type} is the design's topic per event type (refused with --mapping: route.topic.replacement routes)"
	return cmd
}

// serveApp resolves the configuration, builds the app and runs it until
// the command's context ends.
func serveApp(cmd *cobra.Command, cfg *app.Config, logOut io.Writer, opts app.Options) error {
	if err := cfg.Resolve(cmd.Flags()); err != nil {
		return err
	}
	if opts.RelayOnly && cfg.Brokers == "" {
		return app.Usagef("outbox relay publishes to an existing Kafka: give --brokers (the embedded broker runs in outbox serve and outbox broker)")
	}
	a, err := app.New(cmd.Context(), *cfg, logOut, opts)
	if err != nil && cmd.Context().Err() != nil {
		return nil // stopped (SIGTERM) while starting: a clean shutdown
	}
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Serve(cmd.Context())
}

func brokerCmd(stdout, stderr io.Writer) *cobra.Command {
	var port, partitions int
	var dataDir string
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded Kafka-protocol broker (franz-go kfake) on its own, for development",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if port < 0 || port > 65535 {
				return app.Usagef("--port %d is out of range", port)
			}
			if partitions < 1 || partitions > 1000 {
				return app.Usagef("--partitions must be between 1 and 1000, got %d", partitions)
			}
			b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Port: port, Partitions: partitions, DataDir: dataDir})
			if err != nil {
				return err
			}
			defer b.Close()
			fmt.Fprintf(stdout, "Kafka-protocol broker listening on %s (data: %s); Ctrl-C stops it\n", strings.Join(b.Addrs(), ","), orMemory(dataDir))
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", 9092, "port on 127.0.0.1")
	cmd.Flags().IntVar(&partitions, "partitions", 3, "partitions of auto-created topics")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "directory that persists topics across restarts (default: memory only)")
	return cmd
}

func orMemory(dir string) string {
	if dir == "" {
		return "memory only"
	}
	return dir
}

func migrateCmd(stdout io.Writer) *cobra.Command {
	var cfg app.Config
	var printSQL bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the store's tables",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Resolve(cmd.Flags()); err != nil {
				return err
			}
			if printSQL {
				ddl, err := app.PollSetupSQL(cfg)
				if err != nil {
					return err
				}
				fmt.Fprint(stdout, ddl)
				return nil
			}
			// The source is set up too: for CDC this creates the
			// publication and slot before the first write, so no event
			// predates them.
			n, err := app.Migrate(cmd.Context(), cfg, app.NewLogger(cfg, os.Stderr))
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %d migration(s) applied\n", cfg.StoreURL(), n)
			return nil
		},
	}
	cfg.AddFlags(cmd.Flags())
	showOnly(cmd.Flags(), "store", "source", "slot", "recreate-slot", "log-level", "log-format", "config")
	cmd.Flags().BoolVar(&cfg.OutboxOnly, "outbox-only", false, "only the outbox's tables (outbox, checkpoints, dead letters; PostgreSQL and SQLite), no orders table: for your own service")
	cfg.AddMappingFlags(cmd.Flags())
	cmd.Flags().BoolVar(&printSQL, "print-sql", false, "with --mapping, a postgres:// --store and --source poll: print the statements that make your table pollable "+
		"(columns, indexes, commit-order trigger), which migrate applies, and exit without connecting")
	return cmd
}

func versionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build time",
		Args:  noArgs,
		Run: func(*cobra.Command, []string) {
			info, _ := debug.ReadBuildInfo()
			printVersion(stdout, version, info)
		},
	}
}

func dlqCmd(stdout io.Writer) *cobra.Command {
	var cfg app.Config
	var asJSON bool
	root := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay or skip dead letters (the running relay carries out replays)",
	}
	root.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")
	cfg.AddFlags(root.PersistentFlags())
	showOnly(root.PersistentFlags(), "store", "log-level", "log-format", "config")

	open := func(cmd *cobra.Command) (app.Store, error) {
		if err := cfg.Resolve(cmd.Flags()); err != nil {
			return nil, err
		}
		return app.OpenExisting(cmd.Context(), cfg, app.NewLogger(cfg, os.Stderr))
	}
	var f struct {
		aggregate, typ, status string
		after                  int64
		limit                  int
		payload                bool
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The table shows no payload; --json has them unless --payload=false.
			filter := outbox.DeadLetterFilter{Type: f.typ, Status: outbox.DeadLetterStatus(f.status), AfterID: f.after, Limit: f.limit,
				OmitPayload: !asJSON || !f.payload}
			switch filter.Status {
			case "", outbox.StatusParked, outbox.StatusReplayed, outbox.StatusSkipped:
			default:
				return app.Usagef("--status must be parked, replayed or skipped")
			}
			if f.limit < 1 || f.limit > 10000 {
				return app.Usagef("--limit must be between 1 and 10000")
			}
			if f.aggregate != "" {
				typ, id, ok := strings.Cut(f.aggregate, "/")
				if !ok || typ == "" || id == "" {
					return app.Usagef("--aggregate must be TYPE/ID, such as order/42")
				}
				filter.Aggregate = &outbox.AggregateKey{Type: typ, ID: id}
			}
			h, err := open(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			items, err := h.ListDeadLetters(cmd.Context(), filter)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, items)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tAGGREGATE\tSEQ\tTYPE\tLAST FAILED\tERROR")
			for _, d := range items {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.Status, d.Message.Key(), d.Message.Sequence, d.Message.Type,
					d.LastFailedAt.Format(time.RFC3339), truncate(d.Error, 60))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&f.aggregate, "aggregate", "", "only this aggregate, TYPE/ID")
	list.Flags().StringVar(&f.typ, "type", "", "only this event type")
	list.Flags().StringVar(&f.status, "status", "", "parked, replayed or skipped")
	list.Flags().Int64Var(&f.after, "after", 0, "only ids after this one (pagination)")
	list.Flags().IntVar(&f.limit, "limit", 100, "at most this many")
	list.Flags().BoolVar(&f.payload, "payload", true, "with --json, each entry's payload; --payload=false leaves them out and gives payload_size")

	var full bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args)
			if err != nil {
				return err
			}
			h, err := open(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			d, err := h.GetDeadLetter(cmd.Context(), id)
			if err != nil {
				return err
			}
			// --json is for machines: the payload as it is, never cut.
			if full || asJSON || len(d.Message.Payload) <= maxShownPayload {
				return printJSON(stdout, d)
			}
			return printJSON(stdout, truncatedPayload(d))
		},
	}
	show.Flags().BoolVar(&full, "full", false, fmt.Sprintf("print the whole payload (by default one over %d bytes is cut; never with --json)", maxShownPayload))
	var dryRun, all bool
	var reason string
	act := func(action outbox.Action) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if all && action == outbox.ActionReplay {
				if len(args) > 0 {
					return app.Usagef("--all takes no ID")
				}
			} else if _, err := parseID(args); err != nil {
				return err
			}
			h, err := open(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			ops := dlq.Ops{Store: h}
			opts := dlq.RequestOptions{DryRun: dryRun, Reason: reason}
			var plans []dlq.Plan
			var refused []dlq.Refusal
			if all && action == outbox.ActionReplay {
				res, err := ops.ReplayAll(cmd.Context(), opts)
				if err != nil {
					return err
				}
				plans, refused = res.Plans, res.Refused
			} else {
				id, _ := parseID(args)
				plan, err := ops.Act(cmd.Context(), id, action, opts)
				if err != nil {
					return err
				}
				plans = append(plans, plan)
			}
			if asJSON {
				if all {
					return printJSON(stdout, dlq.ReplayAllResult{DryRun: dryRun, Plans: plans, Refused: refused})
				}
				return printJSON(stdout, plans[0])
			}
			for _, r := range refused {
				fmt.Fprintf(stdout, "refused %s: %s\n", r.Aggregate, r.Reason)
			}
			for _, p := range plans {
				verb := "requested; the running relay carries it out"
				if p.DryRun {
					verb = "dry run: nothing changed"
				}
				fmt.Fprintf(stdout, "%s %s: skip %d, republish %d in order (%s)\n", p.Action, p.Aggregate, len(p.Skip), len(p.Republish), verb)
			}
			if len(plans)+len(refused) == 0 {
				fmt.Fprintln(stdout, "no parked aggregates")
			}
			return nil
		}
	}
	replay := &cobra.Command{Use: "replay ID | --all", Short: "Republish a parked aggregate's messages in order, then unpark it", RunE: act(outbox.ActionReplay)}
	replay.Flags().BoolVar(&all, "all", false, "every parked aggregate")
	skip := &cobra.Command{Use: "skip ID", Short: "Discard a parked aggregate's failed message and republish the rest", RunE: act(outbox.ActionSkip)}
	for _, c := range []*cobra.Command{replay, skip} {
		c.Flags().BoolVar(&dryRun, "dry-run", false, "show what would happen and change nothing")
		c.Flags().StringVar(&reason, "reason", "", "why, recorded with the action")
	}
	root.AddCommand(list, show, replay, skip)
	return root
}

func parseID(args []string) (int64, error) {
	if len(args) != 1 {
		return 0, app.Usagef("expected one dead-letter ID, got %d arguments", len(args))
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id < 1 {
		return 0, app.Usagef("dead-letter ID must be a positive integer, got %q", args[0])
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
