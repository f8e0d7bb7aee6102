package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/gocql/gocql"
	"github.com/thejerf/suture/v4"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/scylla"
)

// scyllaBackend runs the system on ScyllaDB: LOGGED BATCH writes, the CDC
// source under a lease, and the sweeper that finishes interrupted order
// updates.
type scyllaBackend struct {
	*scylla.Store
	settings scylla.Settings
	cdc      *scylla.Source
}

// openScylla connects; a URL with a user but no password takes it from
// OUTBOX_SCYLLA_PASSWORD (or _FILE), which keeps it out of ps and logs.
// --idempotency-ttl applies when the URL sets no idempotency_ttl.
func openScylla(raw, password string, keyTTL time.Duration) (*scyllaBackend, error) {
	st, err := scylla.ParseURL(raw)
	if err != nil {
		return nil, usageError{err}
	}
	if st.Config.Username != "" && st.Config.Password == "" {
		st.Config.Password = password
	}
	if st.Config.IdempotencyTTL == 0 {
		st.Config.IdempotencyTTL = keyTTL
	}
	s, err := scylla.Open(st.Config)
	if err != nil {
		return nil, err
	}
	return &scyllaBackend{Store: s, settings: st}, nil
}

func (b *scyllaBackend) Migrate(ctx context.Context) (int, error) {
	return b.Store.Migrate(ctx, b.settings.Schema)
}

func (b *scyllaBackend) orders() order.Repository { return b.Store.Orders() }

// source is CDC: config validation refuses --source poll for ScyllaDB.
func (b *scyllaBackend) source(_ context.Context, _ config, log *slog.Logger) (relay.Source, error) {
	c := b.settings.CDC
	c.Logger = log
	b.cdc = b.CDC(c)
	return b.cdc, nil
}

func (b *scyllaBackend) backlog(context.Context) (int64, error) { return 0, nil }

func (b *scyllaBackend) workers(_ config, log *slog.Logger) map[string]suture.Service {
	b.SetLogger(log)
	return map[string]suture.Service{"order-sweeper": b.NewSweeper(30*time.Second, log.With("worker", "order-sweeper"))}
}

func (b *scyllaBackend) details(context.Context) map[string]any {
	d := map[string]any{"store": "scylla", "source": "cdc", "keyspace": b.settings.Config.Keyspace}
	if lag, ttl, ok := b.cdcLag(); ok {
		d["cdc_lag_seconds"], d["cdc_log_ttl_seconds"] = lag.Seconds(), ttl.Seconds()
	}
	return d
}

func (b *scyllaBackend) appendEvents(ctx context.Context, msgs ...outbox.Message) error {
	return b.AppendEvents(ctx, msgs...)
}

func (b *scyllaBackend) committed(ctx context.Context) ([]checker.Event, error) {
	msgs, err := b.ScanOutbox(ctx)
	out := make([]checker.Event, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, committedEvent(m))
	}
	return out, err
}

func (b *scyllaBackend) insertPlain(ctx context.Context, o order.Order) error {
	return b.Store.Orders().InsertPlain(ctx, o)
}

func (b *scyllaBackend) durability(context.Context) map[string]string {
	c := b.settings.Config.Consistency
	if c == 0 {
		c = gocql.LocalQuorum // Open's default
	}
	return map[string]string{"scylla_write_consistency": c.String(), "scylla_batch": "LOGGED"}
}

func (b *scyllaBackend) slotLag(context.Context) (int64, bool, error) { return 0, false, nil }

func (b *scyllaBackend) cdcLag() (lag, ttl time.Duration, ok bool) {
	if b.cdc == nil {
		return 0, 0, false
	}
	lag, ttl = b.cdc.Lag()
	return lag, ttl, true
}
