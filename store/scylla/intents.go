package scylla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/order"
)

// Notes (order_intents) say which orders may have an event the sweeper
// must finish. They were one partition, which every update wrote and
// deleted in and the sweeper read whole every 30 s: a hot partition, and
// a read that passes every tombstone of the last gc_grace_seconds, which
// Cassandra fails at 100,000. Now a note's partition is the minute it was
// written in (by its writer's clock) and one of noteShards shards of the
// order id; the sweeper reads only the minutes from its horizon on, and
// moves the horizon past minutes it found empty, never closer than
// noteSkew to the cluster's time, so a writer whose clock is behind by
// less than that still lands in a minute that is read. Bucket 0 holds
// the notes of earlier releases.
const (
	noteShards = 8
	noteSkew   = 10 * time.Minute
	// noteFirstLook is how far back a sweeper with no horizon saved
	// starts: the table had only bucket 0 before.
	noteFirstLook = time.Hour
	// noteCatchUp bounds the minutes one sweep reads; a sweeper that was
	// down for long catches up over several sweeps.
	noteCatchUp = 240
	// legacyEvery is how often bucket 0 is read once found empty (an
	// instance of an earlier release may still write there).
	legacyEvery = time.Hour
)

// noteKey names one note, and when it was written (its write timestamp).
type noteKey struct {
	bucket  int32
	orderID string
	version int64
	written int64
}

// noteBucket is the partition of a note written at at for orderID.
func noteBucket(at time.Time, orderID string) int32 {
	h := fnv.New32a()
	h.Write([]byte(orderID))
	return int32(minuteOf(at)*noteShards + int64(h.Sum32()%noteShards))
}

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// writeNote notes that order id is being written at version, with the
// create's intent for a create (empty for an update). Its timestamp is
// the note's own time, so dropNote can delete it with a later one
// whatever the deleter's clock.
func (r Orders) writeNote(ctx context.Context, id string, version int64, intent string) (noteKey, error) {
	now := r.now()
	k := noteKey{bucket: noteBucket(now, id), orderID: id, version: version, written: now.UnixMicro()}
	r.step("note", 0)
	err := r.s.session.Query(`INSERT INTO `+r.s.keyspace+`.order_intents (bucket, order_id, version, created_at, intent)
		VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?`, k.bucket, id, version, k.written, intent, k.written).WithContext(ctx).Exec()
	return k, err
}

// dropNote is best effort: a leftover note costs the sweeper one read.
func (r Orders) dropNote(ctx context.Context, k noteKey) {
	ts := max(r.now().UnixMicro(), k.written+1)
	_ = r.s.session.Query(`DELETE FROM `+r.s.keyspace+`.order_intents USING TIMESTAMP ? WHERE bucket = ? AND order_id = ? AND version = ?`,
		ts, k.bucket, k.orderID, k.version).WithContext(ctx).Exec()
}

// RollForward finishes the creates and updates whose writer died, timed
// out or failed after noting them: every note older than minAge (younger
// ones may still be in flight) has its order settled (a create is
// inserted if absent) and its pending event written and cleared. It
// returns how many notes it finished.
func (r Orders) RollForward(ctx context.Context, minAge time.Duration) (int, error) {
	now, err := r.s.clusterNow(ctx)
	if err != nil {
		return 0, r.failed("order notes: the cluster's time", err)
	}
	horizon, err := r.horizon(ctx, now)
	if err != nil {
		return 0, err
	}
	cutoff := now.Add(-minAge)
	last := min(minuteOf(cutoff), horizon+noteCatchUp)
	handled, keep := 0, int64(-1)
	var errs []error
	for m := horizon; m <= last; m++ {
		for shard := range int64(noteShards) {
			n, left, err := r.sweepBucket(ctx, int32(m*noteShards+shard), cutoff)
			handled += n
			if err != nil {
				errs = append(errs, err)
			}
			if (left || err != nil) && keep < 0 {
				keep = m
			}
		}
	}
	if r.s.legacyDue(now) {
		n, left, err := r.sweepBucket(ctx, 0, cutoff)
		handled += n
		if err != nil {
			errs = append(errs, err)
		} else if !left {
			r.s.legacySwept(now)
		}
	}
	next := last + 1
	if keep >= 0 {
		next = keep
	}
	if next = min(next, minuteOf(now.Add(-noteSkew))); next > horizon {
		if _, err := r.s.session.Query(`UPDATE `+r.s.keyspace+`.outbox_sequences SET next = ? WHERE name = 'order_intents_horizon' IF next = ?`,
			next, horizon).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
			errs = append(errs, fmt.Errorf("scylla: order notes: move the horizon: %w", err))
		}
	}
	return handled, errors.Join(errs...)
}

// horizon is the first minute whose notes the sweeper reads.
func (r Orders) horizon(ctx context.Context, now time.Time) (int64, error) {
	var h int64
	err := r.s.session.Query(`SELECT next FROM ` + r.s.keyspace + `.outbox_sequences WHERE name = 'order_intents_horizon'`).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&h)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, gocql.ErrNotFound) {
		return 0, r.failed("order notes: read the horizon", err)
	}
	h = minuteOf(now.Add(-noteFirstLook))
	prev := map[string]any{}
	applied, err := r.s.session.Query(`INSERT INTO `+r.s.keyspace+`.outbox_sequences (name, next) VALUES ('order_intents_horizon', ?) IF NOT EXISTS`, h).
		WithContext(ctx).MapScanCAS(prev)
	if err != nil {
		return 0, r.failed("order notes: save the horizon", err)
	}
	if !applied {
		h, _ = prev["next"].(int64)
	}
	return h, nil
}

// sweepBucket finishes the due notes of one partition, page by page; left
// reports notes it leaves (too young, or failing).
func (r Orders) sweepBucket(ctx context.Context, bucket int32, cutoff time.Time) (handled int, left bool, err error) {
	iter := r.s.session.Query(`SELECT order_id, version, created_at, intent, WRITETIME(created_at) FROM `+r.s.keyspace+`.order_intents WHERE bucket = ?`, bucket).
		WithContext(ctx).PageSize(500).Iter()
	type note struct {
		noteKey
		created int64
		intent  string
	}
	var due []note
	var n note
	var intent *string
	for iter.Scan(&n.orderID, &n.version, &n.created, &intent, &n.written) {
		n.bucket, n.intent = bucket, ""
		if intent != nil {
			n.intent = *intent
		}
		if n.created > micros(cutoff) {
			left = true
			continue
		}
		due = append(due, n)
	}
	if err := iter.Close(); err != nil {
		return 0, true, r.failed(fmt.Sprintf("order notes: read bucket %d", bucket), err)
	}
	var errs []error
	for _, d := range due {
		if err := r.settle(ctx, d.orderID, d.intent); err != nil && !errors.Is(err, order.ErrNotFound) {
			errs = append(errs, err)
			left = true
			continue
		}
		r.dropNote(ctx, d.noteKey)
		handled++
	}
	return handled, left, errors.Join(errs...)
}

// settle finishes what a note names: a create is inserted if absent (its
// outcome was unknown, or its writer died), then any pending event of the
// order is written and cleared.
//
// A note outlives an update or create whose lightweight transaction timed
// out. Paxos may still complete such a transaction later, if a replica
// accepted it and a later round hears of it first, and nothing would
// then note its event. So once nothing is pending, settle commits a
// transaction of its own on the row (it rewrites last_event_id with its
// value): a round with a higher ballot than the earlier one, after which
// no replica completes the earlier one. (Cassandra since CASSANDRA-12126
// makes a SERIAL read do as much; this does not depend on it.)
func (r Orders) settle(ctx context.Context, id, intent string) error {
	if intent != "" {
		var ci createIntent
		if err := json.Unmarshal([]byte(intent), &ci); err != nil {
			return fmt.Errorf("scylla: order %s: corrupt create note: %w", id, err)
		}
		if err := r.finishCreate(ctx, ci); err != nil {
			return err
		}
	} else if err := r.rollForward(ctx, id); err != nil {
		return err
	}
	var last *gocql.UUID
	err := r.s.session.Query(`SELECT last_event_id FROM `+r.s.keyspace+`.orders WHERE id = ?`, id).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&last)
	if errors.Is(err, gocql.ErrNotFound) {
		return fmt.Errorf("scylla: order %s: %w", id, order.ErrNotFound)
	}
	if err == nil {
		_, err = r.s.session.Query(`UPDATE `+r.s.keyspace+`.orders SET last_event_id = ? WHERE id = ? IF last_event_id = ?`, last, id, last).
			WithContext(ctx).MapScanCAS(map[string]any{})
	}
	if err != nil {
		return r.failed(fmt.Sprintf("settle order %s", id), err)
	}
	return r.rollForward(ctx, id) // anything the settled round completed
}

// clusterNow is the time on the node that answers: the sweeper's horizon
// follows the cluster's clock, not the clock of whichever instance
// sweeps.
func (s *Store) clusterNow(ctx context.Context) (time.Time, error) {
	if s.now != nil {
		return s.now(), nil
	}
	var ms int64
	if err := s.session.Query(`SELECT toUnixTimestamp(now()) FROM system.local`).WithContext(ctx).Scan(&ms); err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms), nil
}

func (s *Store) legacyDue(now time.Time) bool {
	at := s.legacyAt.Load()
	return at == 0 || now.Sub(time.UnixMicro(at)) >= legacyEvery
}

func (s *Store) legacySwept(now time.Time) { s.legacyAt.Store(now.UnixMicro()) }

// Sweeper finishes order creates and updates whose writer died, timed out
// or failed after noting them (see Orders).
type Sweeper struct {
	orders   Orders
	interval time.Duration
	log      *slog.Logger
}

// SweeperConfig configures a Sweeper; the zero value sweeps every 30 s
// and logs nowhere.
type SweeperConfig struct {
	// Interval is how often it sweeps; notes younger than Interval are
	// left to their writers.
	Interval time.Duration
	Logger   *slog.Logger
}

// NewSweeper returns a sweeper of s's order notes.
func (s *Store) NewSweeper(cfg SweeperConfig) *Sweeper {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sweeper{orders: s.Orders(), interval: cfg.Interval, log: cfg.Logger}
}

// Serve runs until ctx ends.
func (w *Sweeper) Serve(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n, err := w.orders.RollForward(ctx, w.interval)
			if err != nil {
				w.log.Warn("order note sweep failed", "err", err)
			}
			if n > 0 {
				w.log.Info("finished interrupted order writes", "count", n)
			}
		}
	}
}
