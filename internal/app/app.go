package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
)

// This file is the one place that chooses adapters and builds the
// supervision tree; the packages below it know nothing of flags.

type appOptions struct {
	http        bool        // serve the API
	relayOnly   bool        // outbox relay: needs --brokers, says what it relays
	brokerOpts  []kfake.Opt // extra options for the embedded broker
	kafkaOpts   []kgo.Opt   // extra client options (chaos: a dialer through a proxy)
	relayConfig func(*relay.Config)
	wrapOrders  func(httpapi.Orders) httpapi.Orders // tests: inject faults
}

type app struct {
	cfg      config
	log      *slog.Logger
	store    backend
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
	tree       *supervise.Tree
	listener   net.Listener
	closers    []func() error
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStore(ctx context.Context, cfg config, log *slog.Logger) (backend, error) {
	if _, err := parseStoreURL(cfg.Store); err != nil {
		return nil, err
	}
	s, err := openBackend(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if _, err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func newApp(ctx context.Context, cfg config, logOut io.Writer, opts appOptions) (_ *app, err error) {
	a := &app{cfg: cfg, log: newLogger(cfg, logOut)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if opts.http && cfg.AdminToken == "" {
		host, _, splitErr := net.SplitHostPort(cfg.HTTP)
		if ip := net.ParseIP(host); splitErr != nil || !(host == "localhost" || (ip != nil && ip.IsLoopback())) {
			return nil, usagef("--http %s listens beyond loopback: set OUTBOX_ADMIN_TOKEN to protect the dead-letter endpoints", cfg.HTTP)
		}
	}
	if a.store, err = openStore(ctx, cfg, a.log); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.store.Close)

	a.brokers = cfg.brokerList()
	if len(a.brokers) == 0 {
		a.embedded, err = kafka.StartEmbedded(kafka.EmbeddedConfig{Port: cfg.BrokerPort, Opts: opts.brokerOpts})
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
		return nil, usageError{err}
	}
	if a.pub, err = kafka.NewPublisher(kafka.Config{Brokers: a.brokers, TopicTemplate: cfg.TopicTemplate, Security: cfg.kafka,
		DisableAutoTopicCreation: cfg.NoAutoCreate, Opts: opts.kafkaOpts}); err != nil {
		return nil, usageError{err}
	}
	a.closers = append([]func() error{a.pub.Close}, a.closers...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = metrics.New(reg)

	var notifier dlq.Notifier
	if cfg.AlertWebhook != "" {
		wh, err := dlq.NewWebhook(cfg.AlertWebhook)
		if err != nil {
			return nil, usageError{err}
		}
		notifier = wh
	}
	a.dlq = dlq.New(a.store, dlq.Config{Notifier: notifier, Counter: a.metrics, Logger: a.log.With("worker", "dlq")})

	src, err := a.store.source(ctx, cfg, a.log.With("worker", "relay"))
	if err != nil {
		return nil, err
	}
	rcfg := relay.Config{
		Breaker:      breakerConfig(cfg),
		StuckTimeout: cfg.StuckTimeout,
		MaxInFlight:  cfg.MaxInFlight,
		Hooks:        []relay.Hook{a.metrics},
		Logger:       a.log.With("worker", "relay"),
	}
	if opts.relayConfig != nil {
		opts.relayConfig(&rcfg)
	}
	if a.relay, err = relay.New(src, a.pub, a.dlq, rcfg); err != nil {
		return nil, usageError{err}
	}
	// What this process relays, from where, to where: the first thing an
	// operator looking at two relays needs to know.
	a.log.Info("relaying", "from", redactURL(cfg.Store), "source", sourceKind(cfg), "to", strings.Join(a.brokers, ","),
		"topics", cfg.TopicTemplate, "stuck_timeout", cfg.StuckTimeout)
	if parked, err := a.store.ParkedAggregates(ctx); err == nil {
		a.metrics.SetParked(len(parked))
	}

	a.health = health.New(health.Config{Interval: time.Second, Logger: a.log.With("worker", "health")},
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
		health.Check{Name: "replication-slot", Run: func(ctx context.Context) error {
			lag, ok, err := a.store.slotLag(ctx)
			if ok && err == nil {
				a.metrics.SetSlotLag(lag)
			}
			return err
		}},
		// Changes older than the CDC log's TTL are deleted unread: alert
		// (degraded health, an error log, the gauges) at half of it.
		health.Check{Name: "cdc-log-ttl", Run: func(context.Context) error {
			lag, ttl, ok := a.store.cdcLag()
			if !ok {
				return nil
			}
			a.metrics.SetCDCLag(lag, ttl)
			if lag > ttl/2 {
				return fmt.Errorf("CDC lag %s is past half the CDC log's TTL %s: changes older than the TTL are lost", lag.Round(time.Second), ttl)
			}
			return nil
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
	)

	a.tree = supervise.New(supervise.Config{Logger: a.log, OnRestart: a.metrics.Restarted})
	a.tree.Add("health", a.health)
	a.tree.Add("dlq", a.dlq)
	a.tree.Add("relay", a.relay)
	for name, w := range a.store.workers(cfg, a.log) {
		a.tree.Add(name, w)
	}
	if opts.http {
		var orders httpapi.Orders = order.NewService(a.store.orders())
		if opts.wrapOrders != nil {
			orders = opts.wrapOrders(orders)
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
			Logger:           a.log.With("worker", "http"),
		})
		a.tree.Add("http", &httpService{srv: httpapi.NewServer(cfg.HTTP, handler), ln: a.listener, log: a.log})
	}
	return a, nil
}

func (a *app) ready(ctx context.Context) error {
	if err := a.store.Ping(ctx); err != nil {
		return fmt.Errorf("store unreachable: %w", err)
	}
	if !a.relay.Running() {
		return errors.New("relay is not running")
	}
	return nil
}

// statusDoc is GET /status.
type statusDoc struct {
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

func (a *app) status(ctx context.Context) statusDoc {
	st := a.relay.Stats()
	backlog, _ := a.store.backlog(ctx)
	parked := st.Parked
	if p, err := a.store.ParkedAggregates(ctx); err == nil {
		parked = int64(len(p))
	}
	var brokerErr string
	if err := a.pub.Unreachable(); err != nil {
		brokerErr = err.Error()
	}
	return statusDoc{
		Breaker: st.Breaker, RelayRunning: a.relay.Running(), RelayActive: st.Active, BrokerError: brokerErr,
		InFlight: st.InFlight, PeakInFlight: st.PeakInFlight, Stuck: st.Stuck,
		LagEvents: max(st.LagEvents, backlog), LagSeconds: st.LagAge.Seconds(), Backlog: backlog,
		Published: st.Published, Retried: st.Retried, FailedRounds: st.Failed, DeadLettered: st.DeadLettered,
		Parked: parked, Alerts: a.dlq.Stats(), Restarts: a.tree.Restarts(), Health: a.health.Report(), Brokers: a.brokers,
		Store: a.store.details(ctx),
	}
}

// Serve runs the supervision tree until ctx ends.
func (a *app) Serve(ctx context.Context) error { return a.tree.Serve(ctx) }

// Close releases what newApp opened; it is safe to call more than once.
func (a *app) Close() {
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

func breakerConfig(cfg config) breaker.Config {
	return breaker.Config{OpenTimeout: cfg.BreakerTimeout}
}
