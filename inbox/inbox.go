package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/outbox-dev/outbox/outbox"
)

// Dialect is the SQL the inbox speaks through database/sql.
type Dialect int

const (
	// Postgres: PostgreSQL through any database/sql driver (pgx's stdlib).
	Postgres Dialect = iota + 1
	// SQLite: modernc.org/sqlite or any SQLite driver.
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Config configures an Inbox. Consumer is required; the rest has working
// zero values.
type Config struct {
	// Consumer names this consumer in the inbox tables, so several
	// consumers (each processing every event once) can share them: use
	// the consumer group's name.
	Consumer string
	// Dialect is the database behind the *sql.Tx given to Record and the
	// *sql.DB given to SQLProcessor and Cleanup. The pgx methods speak
	// PostgreSQL whatever it says.
	Dialect Dialect
	// TrackSequences keeps the highest sequence processed per aggregate,
	// so Record reports gaps and regressions (Result). An event without a
	// sequence (0) or an aggregate id is not tracked.
	TrackSequences bool
	// OnProcessed, when set, hears every event a processor handled, after
	// its transaction committed, duplicates included (res.Duplicate).
	OnProcessed func(ev Event, res Result)
	// TracerProvider, when set, gives each event a processor handles a
	// consumer span ("process {topic}"), the child of the trace the
	// writer stored in the record's headers. Without it, the handler's
	// context still carries that trace as its remote parent.
	TracerProvider trace.TracerProvider
	// Now is the clock of processed_at (default time.Now), which Cleanup
	// compares with its retention.
	Now func() time.Time
}

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("inbox: invalid configuration")

// Inbox records the events a consumer processed, inside the consumer's
// own transactions. It is safe for concurrent use.
type Inbox struct {
	cfg    Config
	tracer trace.Tracer
}

// New validates cfg.
func New(cfg Config) (*Inbox, error) {
	if cfg.Consumer == "" {
		return nil, fmt.Errorf("%w: Consumer is empty", ErrInvalidConfig)
	}
	switch cfg.Dialect {
	case 0, Postgres, SQLite:
	default:
		return nil, fmt.Errorf("%w: unknown Dialect %d", ErrInvalidConfig, int(cfg.Dialect))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	in := &Inbox{cfg: cfg}
	if cfg.TracerProvider != nil {
		in.tracer = cfg.TracerProvider.Tracer("github.com/outbox-dev/outbox/inbox")
	}
	return in, nil
}

// Event is what the inbox needs of a delivered outbox record: its
// headers id, aggregatetype, aggregateid, type and sequence.
type Event struct {
	ID            string
	AggregateType string
	AggregateID   string
	Type          string
	// Sequence is the aggregate's version, strictly increasing per
	// aggregate; 0 when the record has none.
	Sequence int64
}

// ErrNoEventID: the record has no id header, so it cannot be
// deduplicated (it did not come from an outbox relay).
var ErrNoEventID = errors.New("inbox: record has no id header")

// EventFromHeaders reads an event from a record's headers.
func EventFromHeaders(h map[string]string) (Event, error) {
	ev := Event{ID: h[outbox.HeaderID], AggregateType: h[outbox.HeaderAggregateType],
		AggregateID: h[outbox.HeaderAggregateID], Type: h[outbox.HeaderType]}
	if ev.ID == "" {
		return ev, ErrNoEventID
	}
	if s := h[outbox.HeaderSequence]; s != "" {
		seq, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return ev, fmt.Errorf("inbox: event %s: sequence header %q: %w", ev.ID, s, err)
		}
		ev.Sequence = seq
	}
	return ev, nil
}

// EventFromRecord reads an event from a franz-go record's headers.
func EventFromRecord(r *kgo.Record) (Event, error) { return EventFromHeaders(headers(r)) }

func headers(r *kgo.Record) map[string]string {
	h := make(map[string]string, len(r.Headers))
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}

// Result is what the inbox knew of an event when it recorded it.
type Result struct {
	// Duplicate: this consumer processed the event before (or is
	// processing it in a transaction that committed first). Skip it;
	// nothing was recorded.
	Duplicate bool
	// Previous is the highest sequence processed for the event's
	// aggregate before this one; 0 when none (or TrackSequences is off).
	// The first event seen of an aggregate sets its baseline: whether it
	// should have been 1 is the caller's to judge.
	Previous int64
	// Gap is how many sequences are missing between Previous and this
	// event (sequence - Previous - 1), when both are known.
	Gap int64
	// Regression: the event's sequence is at or below Previous: an older
	// event of the aggregate arrived after a newer one (topics per event
	// type, a replayed dead letter), or an event redelivered after its id
	// left the retention window. It is recorded and Previous stays.
	Regression bool
}

// execer is a transaction of either driver.
type execer interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	// queryInt scans one int64; found is false when there is no row.
	queryInt(ctx context.Context, q string, args ...any) (v int64, found bool, err error)
}

type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlTx) queryInt(ctx context.Context, q string, args ...any) (int64, bool, error) {
	var v int64
	err := t.tx.QueryRowContext(ctx, q, args...).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return v, err == nil, err
}

type pgxTx struct{ tx pgx.Tx }

func (t pgxTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

func (t pgxTx) queryInt(ctx context.Context, q string, args ...any) (int64, bool, error) {
	var v int64
	err := t.tx.QueryRow(ctx, q, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return v, err == nil, err
}

// Record records ev as processed by this consumer inside tx, the
// transaction that processes it, and says whether it was processed
// before. Process the event only when res.Duplicate is false, in the same
// transaction: if tx rolls back, the event was not recorded either and
// will be processed when it is delivered again. Config.Dialect must say
// which database tx is on.
func (in *Inbox) Record(ctx context.Context, tx *sql.Tx, ev Event) (Result, error) {
	q, err := in.queries(in.cfg.Dialect)
	if err != nil {
		return Result{}, err
	}
	return in.record(ctx, sqlTx{tx}, q, ev)
}

// RecordPgx is Record for a pgx transaction on PostgreSQL.
func (in *Inbox) RecordPgx(ctx context.Context, tx pgx.Tx, ev Event) (Result, error) {
	return in.record(ctx, pgxTx{tx}, &postgresQueries, ev)
}

func (in *Inbox) queries(d Dialect) (*queries, error) {
	switch d {
	case Postgres:
		return &postgresQueries, nil
	case SQLite:
		return &sqliteQueries, nil
	}
	return nil, fmt.Errorf("%w: Dialect must be Postgres or SQLite to use database/sql", ErrInvalidConfig)
}

func (in *Inbox) record(ctx context.Context, x execer, q *queries, ev Event) (Result, error) {
	if ev.ID == "" {
		return Result{}, ErrNoEventID
	}
	now := q.time(in.cfg.Now())
	n, err := x.exec(ctx, q.insertID, in.cfg.Consumer, ev.ID, now)
	if err != nil {
		return Result{}, fmt.Errorf("inbox: record event %s: %w", ev.ID, err)
	}
	if n == 0 {
		return Result{Duplicate: true}, nil
	}
	if !in.cfg.TrackSequences || ev.Sequence <= 0 || ev.AggregateID == "" {
		return Result{}, nil
	}
	prev, found, err := x.queryInt(ctx, q.selectSeq, in.cfg.Consumer, ev.AggregateType, ev.AggregateID)
	if err != nil {
		return Result{}, fmt.Errorf("inbox: read the sequence of %s/%s: %w", ev.AggregateType, ev.AggregateID, err)
	}
	res := Result{Previous: prev}
	switch {
	case found && ev.Sequence <= prev:
		res.Regression = true
		return res, nil
	case found && ev.Sequence > prev+1:
		res.Gap = ev.Sequence - prev - 1
	}
	if _, err := x.exec(ctx, q.upsertSeq, in.cfg.Consumer, ev.AggregateType, ev.AggregateID, ev.Sequence, now); err != nil {
		return Result{}, fmt.Errorf("inbox: record the sequence of %s/%s: %w", ev.AggregateType, ev.AggregateID, err)
	}
	return res, nil
}
