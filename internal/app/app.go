package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/dlq"
	"github.com/outbox-dev/outbox/health"
	"github.com/outbox-dev/outbox/httpapi"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/metrics"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/supervise"
	"github.com/outbox-dev/outbox/tracing"
)

// This file is the one place that chooses adapters and builds the
// supervision tree; the packages below it know nothing of flags.

// Options choose what New builds beyond the relay.
type Options struct {
	HTTP        bool        // serve the API
	RelayOnly   bool        // outbox relay: needs --brokers, says what it relays
	BrokerOpts  []kfake.Opt // extra options for the embedded broker
	KafkaOpts   []kgo.Opt   // extra client options (chaos: a dialer through a proxy)
	RelayConfig func(*relay.Config)
	WrapOrders  func(httpapi.Orders) httpapi.Orders // tests: inject faults
}

type App struct {
	cfg      Config
	log      *slog.Logger
	store    Backend
	embedded *kafka.Embedded
	brokers  []string
	// clientOpts carry the brokers' TLS and SASL, for other clients (the
	// demo's consumers).
	clientOpts []kgo.Opt
	pub        *kafka.Publisher
	relay      *relay.Relay
	dlq        *dlq.Worker
	health     *health.Checker
	metrics    *metrics.Metrics
	history    *metrics.History
	tree       *supervise.Tree
	listener   net.Listener
	closers    []func() error
}

// NewLogger is the service's logger, at cfg's level and format.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// New builds the service from cfg: the store and its source, the broker
// (embedded without --brokers), the relay, the dead-letter worker, health
// checks, metrics and, with opts.HTTP, the API, under one supervisor.
// Run it with Serve; Close releases what it opened.
func New(ctx context.Context, cfg Config, logOut io.Writer, opts Options) (_ *App, err error) {
	if err := cfg.validated(); err != nil {
		return nil, err
	}
	// outbox relay runs on a library user's database as often as on the
	// order service's: it migrates only outbox's own tables.
	cfg.relayOnly = opts.RelayOnly
	a := &App{cfg: cfg, log: NewLogger(cfg, logOut)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if (opts.HTTP || (opts.RelayOnly && cfg.HTTP != "")) && cfg.AdminToken == "" {
		host, _, splitErr := net.SplitHostPort(cfg.HTTP)
		if ip := net.ParseIP(host); splitErr != nil || !(host == "localhost" || (ip != nil && ip.IsLoopback())) {
			return nil, Usagef("--http %s listens beyond loopback: set OUTBOX_ADMIN_TOKEN to protect the dead-letter endpoints", cfg.HTTP)
		}
	}
	if a.store, err = Open(ctx, cfg, a.log); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.store.Close)

	a.brokers = cfg.BrokerList()
	if len(a.brokers) == 0 {
		a.embedded, err = kafka.StartEmbedded(kafka.EmbeddedConfig{Port: cfg.BrokerPort, Opts: opts.BrokerOpts})
		if err != nil {
			return nil, fmt.Errorf("%w (use --broker-port 0 for any free port, or --brokers)", err)
		}
		a.closers = append(a.closers, a.embedded.Close)
		a.brokers = a.embedded.Addrs()
		a.log.Info("embedded Kafka-protocol broker listening", "addr", a.brokers[0])
	}
	// Validation leaves cfg.kafka empty without --brokers: the embedded
	// broker is plaintext on loopback.
	if a.clientOpts, err = cfg.kafka.Opts(); err != nil {
		return nil, UsageError{Err: err}
	}
	if a.pub, err = kafka.NewPublisher(PublisherConfig(cfg, a.brokers, opts.KafkaOpts)); err != nil {
		return nil, UsageError{Err: err}
	}
	a.closers = append([]func() error{a.pub.Close}, a.closers...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = metrics.New(reg)
	a.history = metrics.NewHistory(historySamples)

	var notifier dlq.Notifier
	if cfg.AlertWebhook != "" {
		wh, err := dlq.NewWebhook(cfg.AlertWebhook)
		if err != nil {
			return nil, UsageError{Err: err}
		}
		notifier = wh
	}
	a.dlq = dlq.New(a.store, dlq.Config{Notifier: notifier, Counter: a.metrics, Logger: a.log.With("worker", "dlq")})

	rcfg := relay.Config{
		Breaker:      BreakerConfig(cfg),
		StuckTimeout: cfg.StuckTimeout,
		MaxInFlight:  cfg.MaxInFlight,
		Hooks:        []relay.Hook{a.metrics, a.history},
		Logger:       a.log.With("worker", "relay"),
	}
	if err := a.trace(ctx, &rcfg); err != nil {
		return nil, err
	}
	if opts.RelayConfig != nil {
		opts.RelayConfig(&rcfg)
	}
	if a.relay, err = relay.New(a.store.Source(), a.pub, a.dlq, rcfg); err != nil {
		return nil, UsageError{Err: err}
	}
	// What this process relays, from where, to where: the first thing an
	// operator looking at two relays needs to know.
	table := "outbox's own"
	if m := cfg.TableMapping(); m != nil {
		table = m.Table
	}
	a.log.Info("relaying", "from", cfg.store.String(), "table", table, "source", cfg.source, "to", strings.Join(a.brokers, ","),
		"topics", cfg.Topics(), "stuck_timeout", cfg.StuckTimeout, "kafka_linger", cfg.KafkaLinger)
	if parked, err := a.store.ParkedAggregates(ctx); err == nil {
		a.metrics.SetParked(len(parked))
	}

	checks := []health.Check{
		health.Check{Name: "store", Critical: true, Run: a.store.Ping},
		health.Check{Name: "relay", Critical: true, Run: func(context.Context) error {
			if !a.relay.Running() {
				return errors.New("relay is not running")
			}
			return nil
		}},
		health.Check{Name: "broker", Run: func(ctx context.Context) error {
			err := a.pub.Ping(ctx)
			if errors.Is(err, kafka.ErrAuthorization) {
				return fmt.Errorf("the relay is not authorized by the broker (check its ACLs and SASL credentials): %w", err)
			}
			return err
		}},
		// An aggregate failing for longer than a few retry rounds: a
		// missing topic, a partition without its in-sync replicas, an ACL.
		health.Check{Name: "stuck-aggregates", Run: func(context.Context) error {
			var long []relay.StuckAggregate
			for _, s := range a.relay.Stuck() {
				if time.Since(s.Since) > 10*time.Second {
					long = append(long, s)
				}
			}
			if len(long) == 0 {
				return nil
			}
			return fmt.Errorf("%d aggregates' events keep failing; the longest, %s, since %s: %s",
				len(long), long[0].Aggregate, long[0].Since.UTC().Format(time.RFC3339), long[0].Error)
		}},
		health.Check{Name: "breaker", Run: func(context.Context) error {
			if s := a.relay.BreakerState(); s != breaker.Closed {
				return fmt.Errorf("circuit breaker %s", s)
			}
			return nil
		}},
	}
	// Only the checks that apply: SQLite and polling have no replication
	// slot, and only ScyllaDB has a CDC log with a TTL.
	if cfg.store.Kind == Postgres && cfg.source == "cdc" {
		checks = append(checks, health.Check{Name: "replication-slot", Run: func(ctx context.Context) error {
			lag, ok, err := a.store.SlotLag(ctx)
			if ok && err == nil {
				a.metrics.SetSlotLag(lag)
			}
			return err
		}})
	}
	if cfg.store.Kind == Scylla {
		// Changes older than the CDC log's TTL are deleted unread: alert
		// (degraded health, an error log, the gauges) at half of it.
		checks = append(checks, health.Check{Name: "cdc-log-ttl", Run: func(context.Context) error {
			lag, ttl, ok := a.store.CDCLag()
			if !ok {
				return nil
			}
			a.metrics.SetCDCLag(lag, ttl)
			if lag > ttl/2 {
				return fmt.Errorf("CDC lag %s is past half the CDC log's TTL %s: changes older than the TTL are lost", lag.Round(time.Second), ttl)
			}
			return nil
		}})
	}
	a.health = health.New(health.Config{Interval: time.Second, Logger: a.log.With("worker", "health")}, checks...)

	a.tree = supervise.New(supervise.Config{Logger: a.log, OnRestart: a.metrics.Restarted})
	a.tree.Add("health", a.health)
	a.tree.Add("dlq", a.dlq)
	a.tree.Add("relay", a.relay)
	a.tree.Add("history", historySampler{h: a.history, stats: a.relay.Stats})
	for name, w := range a.store.Workers(a.log) {
		a.tree.Add(name, w)
	}
	// outbox relay serves the same API without orders, when given --http.
	if opts.HTTP || (opts.RelayOnly && cfg.HTTP != "") {
		var orders httpapi.Orders
		if opts.HTTP {
			orders = order.NewService(a.store.Orders())
			if opts.WrapOrders != nil {
				orders = opts.WrapOrders(orders)
			}
		}
		if a.listener, err = net.Listen("tcp", cfg.HTTP); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.HTTP, err)
		}
		handler := httpapi.New(httpapi.Deps{
			Orders:           orders,
			MaxOrderRequests: max(cfg.OrderWorkers, 1),
			DeadLetters:      a.store,
			Poke:             a.relay.Poke,
			Ready:            a.ready,
			Status:           func(ctx context.Context) any { return a.status(ctx) },
			Metrics:          promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			AdminToken:       cfg.AdminToken,
			History:          func() any { return a.history.Snapshot(historyInterval) },
			ObserveRequest:   a.metrics.ObserveRequest,
			Logger:           a.log.With("worker", "http"),
		})
		a.tree.Add("http", &httpService{srv: httpapi.NewServer(cfg.HTTP, handler), ln: a.listener, log: a.log})
	}
	return a, nil
}

// trace adds a producer span per published message (package tracing)
// when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// is set, exported by OTLP/HTTP; without them nothing is traced. Close
// ends what is open and flushes the spans.
func (a *App) trace(ctx context.Context, rcfg *relay.Config) error {
	tp, err := tracing.ProviderFromEnv(ctx, "outbox")
	if err != nil {
		return UsageError{Err: err}
	}
	if tp == nil {
		return nil
	}
	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return tp.Shutdown(sctx)
	}
	router, err := kafka.NewRouter(a.cfg.Topics())
	if err != nil {
		shutdown()
		return UsageError{Err: err}
	}
	hook := tracing.NewHook(tp, tracing.Config{Topic: router.Topic})
	rcfg.Hooks = append(rcfg.Hooks, hook)
	a.closers = append(a.closers, func() error { hook.Close(); return shutdown() })
	a.log.Info("tracing: a span per published message, exported by OTLP/HTTP")
	return nil
}

func (a *App) ready(ctx context.Context) error {
	if err := a.store.Ping(ctx); err != nil {
		return fmt.Errorf("store unreachable: %w", err)
	}
	if !a.relay.Running() {
		return errors.New("relay is not running")
	}
	return nil
}

// StatusDoc is GET /status.
type StatusDoc struct {
	Breaker      string                   `json:"breaker"`
	RelayRunning bool                     `json:"relay_running"`
	RelayActive  bool                     `json:"relay_active"` // false: a standby, or opening its source
	BrokerError  string                   `json:"broker_unreachable,omitempty"`
	InFlight     int64                    `json:"in_flight"`
	PeakInFlight int64                    `json:"peak_in_flight"`
	Stuck        []relay.StuckAggregate   `json:"stuck"`
	LagEvents    int64                    `json:"lag_events"`
	LagSeconds   float64                  `json:"lag_seconds"`
	Backlog      int64                    `json:"backlog"`
	Published    int64                    `json:"published"`
	Retried      int64                    `json:"retried"`
	FailedRounds int64                    `json:"failed_rounds"`
	DeadLettered int64                    `json:"dead_lettered"`
	Parked       int64                    `json:"parked_aggregates"`
	Alerts       dlq.Stats                `json:"alerts"`
	Restarts     map[string]int64         `json:"restarts"`
	Health       map[string]health.Result `json:"health"`
	Brokers      []string                 `json:"brokers"`
	Store        map[string]any           `json:"store"`
}

func (a *App) status(ctx context.Context) StatusDoc {
	st := a.relay.Stats()
	backlog, _ := a.store.Unpublished(ctx)
	parked := st.Parked
	if p, err := a.store.ParkedAggregates(ctx); err == nil {
		parked = int64(len(p))
	}
	var brokerErr string
	if err := a.pub.Unreachable(); err != nil {
		brokerErr = err.Error()
	}
	return StatusDoc{
		Breaker: st.Breaker, RelayRunning: a.relay.Running(), RelayActive: st.Active, BrokerError: brokerErr,
		InFlight: st.InFlight, PeakInFlight: st.PeakInFlight, Stuck: st.Stuck,
		LagEvents: max(st.LagEvents, backlog), LagSeconds: st.LagAge.Seconds(), Backlog: backlog,
		Published: st.Published, Retried: st.Retried, FailedRounds: st.Failed, DeadLettered: st.DeadLettered,
		Parked: parked, Alerts: a.dlq.Stats(), Restarts: a.tree.Restarts(), Health: a.health.Report(), Brokers: a.brokers,
		Store: a.store.Details(ctx),
	}
}

// Config is the configuration the service runs with.
func (a *App) Config() Config { return a.cfg }

// Store is the service's store.
func (a *App) Store() Backend { return a.store }

// Relay is the service's relay.
func (a *App) Relay() *relay.Relay { return a.relay }

// Publisher is the relay's Kafka publisher.
func (a *App) Publisher() *kafka.Publisher { return a.pub }

// Brokers are the Kafka brokers the relay publishes to (the embedded
// broker's address without --brokers).
func (a *App) Brokers() []string { return a.brokers }

// Embedded is the in-process broker, nil with --brokers.
func (a *App) Embedded() *kafka.Embedded { return a.embedded }

// ClientOpts carry the brokers' TLS and SASL, for other clients.
func (a *App) ClientOpts() []kgo.Opt { return a.clientOpts }

// Addr is the API's listening address, nil without Options.HTTP.
func (a *App) Addr() net.Addr {
	if a.listener == nil {
		return nil
	}
	return a.listener.Addr()
}

// Health is the service's health checker.
func (a *App) Health() *health.Checker { return a.health }

// Restarts counts each supervised worker's restarts.
func (a *App) Restarts() map[string]int64 { return a.tree.Restarts() }

// Status is the /status document.
func (a *App) Status(ctx context.Context) StatusDoc { return a.status(ctx) }

// Serve runs the supervision tree until ctx ends, and says when it
// starts and ends shutting down (a broker that does not answer can make
// that take seconds).
func (a *App) Serve(ctx context.Context) error {
	var since atomic.Pointer[time.Time]
	what := "the relay and its workers"
	if a.listener != nil {
		what = "the API, " + what
	}
	stop := context.AfterFunc(ctx, func() {
		now := time.Now()
		since.Store(&now)
		a.log.Info("shutting down: stopping " + what)
	})
	defer stop()
	err := a.tree.Serve(ctx)
	if t := since.Load(); t != nil {
		a.log.Info("stopped", "took", time.Since(*t).Round(time.Millisecond))
	}
	return err
}

// Close releases what newApp opened; it is safe to call more than once.
func (a *App) Close() {
	for _, c := range a.closers {
		c()
	}
	a.closers = nil
}

// httpService serves the API under supervision and stops it with
// Shutdown, bounded in time.
type httpService struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

func (h *httpService) Serve(ctx context.Context) error {
	ln := h.ln
	h.ln = nil
	if ln == nil { // a restart: listen again
		var err error
		if ln, err = net.Listen("tcp", h.srv.Addr); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(ln) }()
	h.log.Info("HTTP API listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(sctx); err != nil {
			h.log.Error("HTTP shutdown", "err", err)
		}
		<-errc
		return nil
	}
}

func BreakerConfig(cfg Config) breaker.Config {
	return breaker.Config{OpenTimeout: cfg.BreakerTimeout}
}

// PublisherConfig is the Kafka publisher cfg describes (after Validate).
func PublisherConfig(cfg Config, brokers []string, opts []kgo.Opt) kafka.Config {
	return kafka.Config{Brokers: brokers, TopicTemplate: cfg.Topics(), Security: cfg.kafka,
		DisableAutoTopicCreation: cfg.NoAutoCreate, Linger: cfg.KafkaLinger, Opts: opts}
}
