package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/internal/w3c"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// Processor processes one record. Run calls it for each record, in order
// per partition; an error is retried unless outbox.IsPermanent says it
// cannot succeed.
type Processor func(ctx context.Context, rec *kgo.Record) error

// SQLHandler processes one event, not seen before, inside tx: write your
// rows in tx, and they commit with the inbox's record of the event. res
// says where the event stands in its aggregate's sequence. ctx carries
// the writer's trace (see Config.TracerProvider).
type SQLHandler func(ctx context.Context, tx *sql.Tx, rec *kgo.Record, ev Event, res Result) error

// PgxHandler is SQLHandler for pgx.
type PgxHandler func(ctx context.Context, tx pgx.Tx, rec *kgo.Record, ev Event, res Result) error

// PgxBeginner begins pgx transactions: *pgxpool.Pool, *pgx.Conn.
type PgxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// SQLProcessor processes each record in a transaction of its own on db:
// it records the event in the inbox and, unless it is a duplicate, calls
// h; then commits. h returning an error rolls everything back.
// Config.Dialect must say which database db is.
func (in *Inbox) SQLProcessor(db *sql.DB, h SQLHandler) Processor {
	return func(ctx context.Context, rec *kgo.Record) error {
		return in.process(ctx, rec, func(ctx context.Context, ev Event) (Result, error) {
			q, err := in.queries(in.cfg.Dialect)
			if err != nil {
				return Result{}, outbox.Permanent(err)
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return Result{}, fmt.Errorf("inbox: begin: %w", err)
			}
			defer tx.Rollback()
			res, err := in.record(ctx, sqlTx{tx}, q, ev)
			if err != nil || res.Duplicate {
				return res, err
			}
			if err := h(ctx, tx, rec, ev, res); err != nil {
				return res, err
			}
			if err := tx.Commit(); err != nil {
				return res, fmt.Errorf("inbox: commit event %s: %w", ev.ID, err)
			}
			return res, nil
		})
	}
}

// PgxProcessor is SQLProcessor for pgx (PostgreSQL).
func (in *Inbox) PgxProcessor(db PgxBeginner, h PgxHandler) Processor {
	return func(ctx context.Context, rec *kgo.Record) error {
		return in.process(ctx, rec, func(ctx context.Context, ev Event) (Result, error) {
			tx, err := db.Begin(ctx)
			if err != nil {
				return Result{}, fmt.Errorf("inbox: begin: %w", err)
			}
			defer tx.Rollback(context.WithoutCancel(ctx))
			res, err := in.record(ctx, pgxTx{tx}, &postgresQueries, ev)
			if err != nil || res.Duplicate {
				return res, err
			}
			if err := h(ctx, tx, rec, ev, res); err != nil {
				return res, err
			}
			if err := tx.Commit(ctx); err != nil {
				return res, fmt.Errorf("inbox: commit event %s: %w", ev.ID, err)
			}
			return res, nil
		})
	}
}

// process reads the event, joins the writer's trace and runs one
// transaction.
func (in *Inbox) process(ctx context.Context, rec *kgo.Record, txn func(context.Context, Event) (Result, error)) (err error) {
	h := headers(rec)
	ev, err := EventFromHeaders(h)
	if err != nil {
		return outbox.Permanent(fmt.Errorf("%w (%s/%d@%d)", err, rec.Topic, rec.Partition, rec.Offset))
	}
	ctx = w3c.Extract(ctx, h)
	if in.tracer != nil {
		var span trace.Span
		ctx, span = in.tracer.Start(ctx, "process "+rec.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				semconv.MessagingSystemKafka,
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(rec.Topic),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(int(rec.Partition))),
				semconv.MessagingKafkaOffset(int(rec.Offset)),
				semconv.MessagingMessageID(ev.ID),
				semconv.MessagingKafkaMessageKey(string(rec.Key)),
				semconv.MessagingConsumerGroupName(in.cfg.Consumer),
			))
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
		res, err := txn(ctx, ev)
		span.SetAttributes(attribute.Bool("outbox.inbox.duplicate", res.Duplicate))
		return in.processed(ev, res, err)
	}
	res, err := txn(ctx, ev)
	return in.processed(ev, res, err)
}

func (in *Inbox) processed(ev Event, res Result, err error) error {
	if err == nil && in.cfg.OnProcessed != nil {
		in.cfg.OnProcessed(ev, res)
	}
	return err
}

// RunConfig tunes Run. Its zero value works.
type RunConfig struct {
	// MaxPollRecords bounds the records taken per poll (default 500).
	MaxPollRecords int
	// RetryDelay is the first wait before a failed record is processed
	// again (default 100 ms); it doubles up to MaxRetryDelay (default 5 s).
	RetryDelay, MaxRetryDelay time.Duration
	// MaxAttempts gives up on a record after this many failed attempts
	// and returns its error (default 0: retry until ctx ends).
	MaxAttempts int
	Logger      *slog.Logger
}

// ErrClientConfig: the client given to Run would commit offsets of
// records not yet processed, or has no group to commit to.
var ErrClientConfig = errors.New("inbox: the client must consume in a group with kgo.DisableAutoCommit")

// ProcessError is a record that could not be processed: a permanent
// error, or MaxAttempts reached. Offsets of the records before it were
// committed; it and those after it were not.
type ProcessError struct {
	Topic     string
	Partition int32
	Offset    int64
	Attempts  int
	Err       error
}

func (e *ProcessError) Error() string {
	return fmt.Sprintf("inbox: process %s/%d@%d (%d attempts): %v", e.Topic, e.Partition, e.Offset, e.Attempts, e.Err)
}

func (e *ProcessError) Unwrap() error { return e.Err }

// Run consumes with cl until ctx ends, processing each record with
// process, in order per partition, then committing the offsets of what
// was processed. A record is committed only after its transaction
// committed, so a crash re-delivers it, and the inbox skips it: at least
// once from the broker, once in effect.
//
// cl must consume in a group (kgo.ConsumerGroup) with
// kgo.DisableAutoCommit. kgo.BlockRebalanceOnPoll is recommended: Run
// then lets a rebalance in only after committing, so a partition moves
// with no work in flight (and a record that keeps failing holds the
// rebalance back: bound it with MaxAttempts). Without it, a record may be
// processed by two members around a rebalance; the inbox makes one of
// them a duplicate.
//
// A failed record is processed again after a backoff until it succeeds,
// its error is permanent (outbox.Permanent), MaxAttempts is reached or
// ctx ends. Run then returns a *ProcessError after committing the records
// before it; the client's fetch position is past it, so close cl and
// start a new client to resume from the commit. Run returns nil when ctx
// ends.
func Run(ctx context.Context, cl *kgo.Client, process Processor, cfg RunConfig) error {
	if g, _ := cl.OptValue(kgo.ConsumerGroup).(string); g == "" {
		return ErrClientConfig
	}
	if off, _ := cl.OptValue(kgo.DisableAutoCommit).(bool); !off {
		return ErrClientConfig
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 500
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 100 * time.Millisecond
	}
	if cfg.MaxRetryDelay < cfg.RetryDelay {
		cfg.MaxRetryDelay = max(5*time.Second, cfg.RetryDelay)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	defer cl.AllowRebalance()
	for {
		fs := cl.PollRecords(ctx, cfg.MaxPollRecords)
		if ctx.Err() != nil {
			return nil
		}
		if fs.IsClientClosed() {
			return fmt.Errorf("inbox: %w", kgo.ErrClientClosed)
		}
		fs.EachError(func(topic string, p int32, err error) {
			cfg.Logger.Warn("fetch failed; the client retries", "topic", topic, "partition", p, "err", err)
		})
		var done []*kgo.Record
		var failed *ProcessError
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if failed != nil || ctx.Err() != nil {
				return
			}
			for _, rec := range p.Records {
				if err := processWithRetry(ctx, rec, process, cfg); err != nil {
					if ctx.Err() == nil {
						failed = err
					}
					return
				}
				done = append(done, rec)
			}
		})
		if len(done) > 0 {
			// Failure is harmless: what was not committed is delivered
			// again and skipped by the inbox.
			if err := cl.CommitRecords(context.WithoutCancel(ctx), done...); err != nil {
				cfg.Logger.Warn("commit offsets failed; processed records will be delivered again and skipped", "records", len(done), "err", err)
			}
		}
		cl.AllowRebalance()
		if failed != nil {
			return failed
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func processWithRetry(ctx context.Context, rec *kgo.Record, process Processor, cfg RunConfig) *ProcessError {
	delay := cfg.RetryDelay
	for attempt := 1; ; attempt++ {
		err := process(ctx, rec)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || outbox.IsPermanent(err) || (cfg.MaxAttempts > 0 && attempt >= cfg.MaxAttempts) {
			return &ProcessError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Attempts: attempt, Err: err}
		}
		cfg.Logger.Warn("processing failed; retrying", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset,
			"attempt", attempt, "retry_in", delay, "err", err)
		if retry.Wait(ctx, delay) != nil {
			return &ProcessError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Attempts: attempt, Err: err}
		}
		delay = min(2*delay, cfg.MaxRetryDelay)
	}
}
