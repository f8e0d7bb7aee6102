package scylla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Orders is the order repository on CQL.
//
// Every write to an order row is a lightweight transaction, so the row
// has one source of write timestamps: Paxos ballots, which increase per
// partition whatever the clocks of the instances that write it. (A plain
// write carries its client's clock, and an instance whose clock is ahead
// would overwrite later transactions with its older state.) A create or
// an update is a write-ahead intent:
//
//  1. a note in order_intents (for the sweeper);
//  2. one LWT on the order row sets the new state and the event as
//     pending_event: IF NOT EXISTS for a create, IF version = n-1 AND
//     pending_event_id = null for an update;
//  3. the outbox row, written USING TIMESTAMP the writetime of the order
//     row's latest LWT, read right after it (see publish);
//  4. one LWT clears pending_event; then the note is deleted.
//
// Once step 2 applies, the event is durable in the same partition as the
// state it describes, and whoever comes next rolls it forward: the next
// update of the order (its step 2 refuses while an event is pending) or
// the sweeper (RollForward). The condition on pending_event_id keeps
// events in order: version n+1 cannot be written until version n's outbox
// row is, and its timestamp, a later ballot, is larger. A roll-forward
// racing the original writer writes the same row twice, which CDC may
// publish twice: at least once, never lost, never reordered.
//
// A write that times out is retried with the same ids until its outcome
// is known (a lightweight transaction that applied is recognised as this
// request's own); one still unknown is answered order.ErrUnavailable, and
// its note has the sweeper finish it.
type Orders struct {
	s *Store
	// now is this instance's clock: it names the note buckets, and
	// nothing on the order row or the outbox row depends on it.
	now func() time.Time
	// crashAfterClaim stops an update after its LWT, as a crash would
	// (tests only).
	crashAfterClaim bool
	// hook, when set, hears each step before it runs (tests only).
	hook func(step string, attempt int)
}

var _ order.Repository = Orders{}

// Orders returns the repository.
func (s *Store) Orders() Orders { return Orders{s: s, now: time.Now} }

const orderColumns = `id, customer_id, items, currency, address, status, total, version, created_at, updated_at, pending_event`

var errSimulatedCrash = errors.New("scylla: simulated crash after the update's LWT")

func (r Orders) step(name string, attempt int) {
	if r.hook != nil {
		r.hook(name, attempt)
	}
}

// pendingEvent is the intent stored with an update.
type pendingEvent struct {
	Event outbox.Message `json:"event"`
}

// orderInsert is the CQL and arguments that write o's row.
func (r Orders) orderInsert(o order.Order) (string, []any, error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return "", nil, err
	}
	return `INSERT INTO ` + r.s.keyspace + `.orders (id, customer_id, items, currency, address, status, total, version, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		[]any{o.ID, o.CustomerID, string(items), o.Currency, o.Address, string(o.Status), o.Total, o.Version, micros(o.CreatedAt), micros(o.UpdatedAt)}, nil
}

// createIntent is what an idempotency key and a create's note remember,
// so a create that died or timed out after its note is finished.
type createIntent struct {
	Order order.Order    `json:"order"`
	Event outbox.Message `json:"event"`
}

// Create implements order.Repository.
func (r Orders) Create(ctx context.Context, o order.Order, ev outbox.Message, key, hash string) (order.Order, bool, error) {
	if err := ev.Validate(); err != nil {
		return order.Order{}, false, err
	}
	var claimed time.Time
	if key != "" {
		got, replayed, err := r.claimKey(ctx, o, ev, key, hash)
		if err != nil || replayed {
			return got, replayed, err
		}
		claimed = time.Now()
	}
	if err := r.create(ctx, o, ev); err != nil {
		return order.Order{}, false, err
	}
	if key != "" {
		if ttl, ok := doneTTL(r.s.keyTTL - time.Since(claimed)); ok {
			if err := r.markDone(ctx, key, ttl); err != nil {
				return order.Order{}, false, err
			}
		}
	}
	return o, false, nil
}

// claimKey claims an idempotency key for o. replayed is true when the key
// belongs to an earlier request with the same body: its order (finished
// first if it was not) is returned.
func (r Orders) claimKey(ctx context.Context, o order.Order, ev outbox.Message, key, hash string) (order.Order, bool, error) {
	intent, err := json.Marshal(createIntent{o, ev})
	if err != nil {
		return order.Order{}, false, err
	}
	// The key lives for the retention window, as a TTL: a retry after it
	// finds no key and creates a new order.
	prev := map[string]any{}
	attempts := 0
	err = r.retry(ctx, "key", func() error {
		attempts++
		clear(prev)
		_, err := r.s.session.Query(`INSERT INTO `+r.s.keyspace+`.order_idempotency_keys (key, request_hash, order_id, intent, done, created_at)
			VALUES (?, ?, ?, ?, false, ?) IF NOT EXISTS USING TTL ?`, key, hash, o.ID, string(intent), micros(o.CreatedAt), ttlSeconds(r.s.keyTTL)).
			WithContext(ctx).MapScanCAS(prev)
		return err
	})
	if err != nil {
		return order.Order{}, false, r.failed("claim idempotency key", err)
	}
	if len(prev) == 0 || attempts > 1 && prev["order_id"] == o.ID { // applied, now or by an attempt whose answer was lost
		return o, false, nil
	}
	if prev["request_hash"] != hash {
		return order.Order{}, false, fmt.Errorf("scylla: create order: %w", order.ErrIdempotencyKey)
	}
	if done, _ := prev["done"].(bool); !done {
		var ci createIntent
		if err := json.Unmarshal([]byte(fmt.Sprint(prev["intent"])), &ci); err != nil {
			return order.Order{}, false, fmt.Errorf("scylla: idempotency key %q: corrupt intent: %w", key, err)
		}
		if err := r.finishCreate(ctx, ci); err != nil {
			return order.Order{}, false, err
		}
		if err := r.markDoneAsLeft(ctx, key); err != nil {
			return order.Order{}, false, err
		}
	}
	got, err := r.Get(ctx, fmt.Sprint(prev["order_id"]))
	return got, true, err
}

// create writes a new order and its event: note, LWT, event, clear.
func (r Orders) create(ctx context.Context, o order.Order, ev outbox.Message) error {
	intent, err := json.Marshal(createIntent{o, ev})
	if err != nil {
		return err
	}
	note, err := r.writeNote(ctx, o.ID, o.Version, string(intent))
	if err != nil {
		return r.failed(fmt.Sprintf("create order %s: note", o.ID), err)
	}
	armed, err := r.claimCreate(ctx, o, ev)
	if err != nil {
		return r.failed(fmt.Sprintf("create order %s (the sweeper finishes it if it applied)", o.ID), err)
	}
	r.finish(ctx, o.ID, ev, armed, note)
	return nil
}

// claimCreate inserts the order row with its event pending, retrying a
// timed-out attempt until its outcome is known. armed is when the
// applied attempt was sent (zero when it was an earlier one, whose answer
// was lost): see publish.
func (r Orders) claimCreate(ctx context.Context, o order.Order, ev outbox.Message) (armed time.Time, err error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return time.Time{}, err
	}
	pending, err := json.Marshal(pendingEvent{ev})
	if err != nil {
		return time.Time{}, err
	}
	err = r.retry(ctx, "claim", func() error {
		armed = time.Now()
		applied, err := r.s.session.Query(`INSERT INTO `+r.s.keyspace+`.orders (id, customer_id, items, currency, address, status, total, version,
			created_at, updated_at, pending_event, pending_event_id, last_event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`,
			o.ID, o.CustomerID, string(items), o.Currency, o.Address, string(o.Status), o.Total, o.Version, micros(o.CreatedAt), micros(o.UpdatedAt),
			string(pending), gocql.UUID(ev.ID), gocql.UUID(ev.ID)).WithContext(ctx).MapScanCAS(map[string]any{})
		if err == nil && !applied {
			// The row exists: order ids are new for each create, so it
			// is this one's, written by an attempt whose answer was lost
			// (or by the sweeper or a retry finishing it).
			armed = time.Time{}
		}
		return err
	})
	return armed, err
}

// finishCreate completes a create known from its intent (a note, or an
// idempotency key retried): the row is inserted if absent, and whatever
// event it has pending is written.
func (r Orders) finishCreate(ctx context.Context, ci createIntent) error {
	if _, err := r.claimCreate(ctx, ci.Order, ci.Event); err != nil {
		return r.failed(fmt.Sprintf("finish order %s", ci.Order.ID), err)
	}
	return r.rollForward(ctx, ci.Order.ID)
}

// retry runs op until it succeeds or fails for a reason other than an
// unknown outcome, at most Config.WriteAttempts times; op must be the
// same write each time (same ids and values), so an attempt that applied
// without its answer is recognised by the next.
func (r Orders) retry(ctx context.Context, step string, op func() error) error {
	var err error
	for attempt := 0; attempt < r.s.attempts; attempt++ {
		r.step(step, attempt)
		if err = op(); err == nil || !unknownOutcome(err) || ctx.Err() != nil {
			return err
		}
	}
	return fmt.Errorf("%w after %d attempts: %w", errOutcomeUnknown, r.s.attempts, err)
}

// errOutcomeUnknown: every attempt of a write timed out; it may have
// applied, or apply later.
var errOutcomeUnknown = errors.New("outcome unknown")

// failed wraps err of what; an error of the cluster's (unreachable,
// overloaded, timed out) is order.ErrUnavailable, which the API answers
// with 503.
func (r Orders) failed(what string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("%w: scylla: %s: %w", order.ErrUnavailable, what, err)
	}
	return fmt.Errorf("scylla: %s: %w", what, err)
}

// unknownOutcome reports whether a write that failed with err may have
// applied: the request reached a node and no answer says it did not.
func unknownOutcome(err error) bool {
	var reqErr gocql.RequestError
	if errors.As(err, &reqErr) {
		switch reqErr.Code() {
		case gocql.ErrCodeWriteTimeout, gocql.ErrCodeWriteFailure, gocql.ErrCodeCASWriteUnknown, gocql.ErrCodeServer:
			return true
		}
		return false // refused before it was applied (unavailable, overloaded, invalid)
	}
	var qe *gocql.QueryError
	if errors.As(err, &qe) {
		return qe.PotentiallyExecuted()
	}
	return errors.Is(err, gocql.ErrTimeoutNoResponse) || errors.Is(err, gocql.ErrConnectionClosed) || errors.Is(err, context.DeadlineExceeded)
}

// unavailable reports whether err is the cluster's: not reachable, not
// enough replicas, overloaded, or timed out.
func unavailable(err error) bool {
	if errors.Is(err, errOutcomeUnknown) || unknownOutcome(err) {
		return true
	}
	var reqErr gocql.RequestError
	if errors.As(err, &reqErr) {
		switch reqErr.Code() {
		case gocql.ErrCodeUnavailable, gocql.ErrCodeOverloaded, gocql.ErrCodeBootstrapping, gocql.ErrCodeReadTimeout, gocql.ErrCodeReadFailure:
			return true
		}
		return false
	}
	if errors.Is(err, gocql.ErrNoConnections) || errors.Is(err, gocql.ErrHostDown) || errors.Is(err, gocql.ErrNoPool) ||
		errors.Is(err, gocql.ErrNoConnectionsInPool) || errors.Is(err, gocql.ErrNoStreams) || errors.Is(err, gocql.ErrConnectionClosed) {
		return true
	}
	// A request the driver never sent, the node being gone: a connection
	// it had closed, or a write that failed (a broken pipe after the node
	// was killed). Not one it could not encode, which is this side's.
	var qe *gocql.QueryError
	var me gocql.MarshalError
	var ne net.Error
	return errors.As(err, &qe) && !qe.PotentiallyExecuted() && !errors.As(err, &me) || errors.As(err, &ne)
}

// ttlSeconds is d as a CQL TTL.
func ttlSeconds(d time.Duration) int { return int(d / time.Second) }

// doneTTL is the TTL of a key's done flag when its claim has left to
// live. An UPDATE keeps a row alive while any cell of it lives, and a row
// left with done alone once the claim expired would refuse every retry of
// the key as another request's; so the flag goes a second before the
// claim (TTLs count whole seconds on the server). ok is false when too
// little is left to write it: a retry in those last seconds finds the key
// not done and finishes it again, which writes nothing new.
func doneTTL(left time.Duration) (ttl int, ok bool) {
	ttl = ttlSeconds(left) - 1
	return ttl, ttl >= 1
}

// markDoneAsLeft marks a key done with a TTL from what its claim has
// left.
func (r Orders) markDoneAsLeft(ctx context.Context, key string) error {
	var left *int
	err := r.s.session.Query(`SELECT TTL(request_hash) FROM `+r.s.keyspace+`.order_idempotency_keys WHERE key = ?`, key).
		WithContext(ctx).Scan(&left)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return nil // the key expired meanwhile: a flag would bring back a row of it alone
	case err != nil:
		return r.failed(fmt.Sprintf("idempotency key %q: read its TTL", key), err)
	case left == nil:
		return r.markDone(ctx, key, 0) // claimed before keys expired: it never expires
	}
	if ttl, ok := doneTTL(time.Duration(*left) * time.Second); ok {
		return r.markDone(ctx, key, ttl)
	}
	return nil
}

// markDone sets the key's done flag with a TTL in seconds (0: none; see
// doneTTL). It is a lightweight transaction like the claim, so its
// timestamp is a later ballot than the claim's: as a plain write it would
// carry this instance's clock, and lose to the claim's done = false if
// that clock were behind.
func (r Orders) markDone(ctx context.Context, key string, ttl int) error {
	err := r.retry(ctx, "done", func() error {
		_, err := r.s.session.Query(`UPDATE `+r.s.keyspace+`.order_idempotency_keys USING TTL ? SET done = true WHERE key = ? IF EXISTS`, ttl, key).
			WithContext(ctx).MapScanCAS(map[string]any{})
		return err
	})
	if err != nil {
		return r.failed(fmt.Sprintf("idempotency key %q", key), err)
	}
	return nil
}

// Get implements order.Repository. It reads at SERIAL so an update whose
// LWT is in flight is either seen whole or not at all.
func (r Orders) Get(ctx context.Context, id string) (order.Order, error) {
	o, _, err := r.get(ctx, id)
	return o, err
}

func (r Orders) get(ctx context.Context, id string) (order.Order, *outbox.Message, error) {
	var o order.Order
	var items, status, pending string
	var created, updated int64
	err := r.s.session.Query(`SELECT `+orderColumns+` FROM `+r.s.keyspace+`.orders WHERE id = ?`, id).
		WithContext(ctx).Consistency(gocql.LocalSerial).
		Scan(&o.ID, &o.CustomerID, &items, &o.Currency, &o.Address, &status, &o.Total, &o.Version, &created, &updated, &pending)
	if errors.Is(err, gocql.ErrNotFound) {
		return o, nil, fmt.Errorf("scylla: order %s: %w", id, order.ErrNotFound)
	}
	if err != nil {
		return o, nil, r.failed(fmt.Sprintf("order %s", id), err)
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return o, nil, fmt.Errorf("scylla: order %s: items: %w", id, err)
	}
	o.Status, o.CreatedAt, o.UpdatedAt = order.Status(status), fromMicros(created), fromMicros(updated)
	if pending == "" {
		return o, nil, nil
	}
	var pe pendingEvent
	if err := json.Unmarshal([]byte(pending), &pe); err != nil {
		return o, nil, fmt.Errorf("scylla: order %s: pending event: %w", id, err)
	}
	return o, &pe.Event, nil
}

// Update implements order.Repository.
func (r Orders) Update(ctx context.Context, o order.Order, ev outbox.Message) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	note, err := r.writeNote(ctx, o.ID, o.Version, "")
	if err != nil {
		return r.failed(fmt.Sprintf("update order %s: note", o.ID), err)
	}
	armed, err := r.claimUpdate(ctx, o, ev)
	if errors.Is(err, order.ErrConflict) {
		r.dropNote(ctx, note)
	}
	if err != nil {
		return err
	}
	if r.crashAfterClaim {
		return errSimulatedCrash
	}
	r.finish(ctx, o.ID, ev, armed, note)
	return nil
}

// claimUpdate is the update's lightweight transaction, retried until its
// outcome is known; see claimCreate for armed.
func (r Orders) claimUpdate(ctx context.Context, o order.Order, ev outbox.Message) (armed time.Time, err error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return time.Time{}, err
	}
	pending, err := json.Marshal(pendingEvent{ev})
	if err != nil {
		return time.Time{}, err
	}
	for rolled := false; ; rolled = true {
		prev := map[string]any{}
		var applied bool
		attempts := 0
		err := r.retry(ctx, "claim", func() error {
			attempts++
			armed = time.Now()
			clear(prev)
			var err error
			applied, err = r.s.session.Query(`UPDATE `+r.s.keyspace+`.orders SET items = ?, address = ?, status = ?, total = ?, version = ?, updated_at = ?,
				pending_event = ?, pending_event_id = ?, last_event_id = ? WHERE id = ? IF version = ? AND pending_event_id = null`,
				string(items), o.Address, string(o.Status), o.Total, o.Version, micros(o.UpdatedAt), string(pending), gocql.UUID(ev.ID), gocql.UUID(ev.ID),
				o.ID, o.Version-1).WithContext(ctx).MapScanCAS(prev)
			return err
		})
		if err != nil {
			return time.Time{}, r.failed(fmt.Sprintf("update order %s to version %d", o.ID, o.Version), err)
		}
		if applied {
			return armed, nil
		}
		if attempts > 1 && r.claimed(ctx, o.ID, ev) {
			return time.Time{}, nil // applied by an attempt whose answer was lost
		}
		if v, _ := prev["version"].(int64); v != o.Version-1 || rolled {
			return time.Time{}, fmt.Errorf("scylla: update order %s to version %d: %w", o.ID, o.Version, order.ErrConflict)
		}
		// The version matches but the previous update's event is still
		// pending: publish it first, or this one would overtake it.
		if err := r.rollForward(ctx, o.ID); err != nil {
			return time.Time{}, err
		}
	}
}

// claimed reports whether the order row carries ev as its latest event:
// an update attempt whose answer was lost applied.
func (r Orders) claimed(ctx context.Context, id string, ev outbox.Message) bool {
	var pendingID, lastID gocql.UUID
	err := r.s.session.Query(`SELECT pending_event_id, last_event_id FROM `+r.s.keyspace+`.orders WHERE id = ?`, id).
		WithContext(ctx).Consistency(gocql.LocalSerial).Scan(&pendingID, &lastID)
	return err == nil && (pendingID == gocql.UUID(ev.ID) || lastID == gocql.UUID(ev.ID))
}

// finish publishes a claimed event and drops the note. A failure is not
// the caller's: the change is committed (its event pending in the order
// row), and the next update of the order or the sweeper writes the event.
func (r Orders) finish(ctx context.Context, id string, ev outbox.Message, armed time.Time, note noteKey) {
	if err := r.publish(ctx, id, ev, armed); err != nil {
		r.s.log.Load().Warn("order event left pending for the sweeper", "order", id, "event_id", ev.ID, "err", err)
		return
	}
	r.dropNote(ctx, note)
}

// publish writes the pending event ev of order id to the outbox and
// clears it. The outbox row's timestamp is the writetime of the order
// row's latest lightweight transaction, read right after it: CDC delivers
// an aggregate's changes in timestamp order, and those ballots increase
// with the order's versions whatever the instances' clocks. The write
// must also be visible before the CDC reader passes its timestamp: it
// counts only if it was acknowledged within Config.EventWriteDeadline of
// sending the transaction whose ballot it carries (armed; zero: none
// yet). Otherwise, or when it fails, the event is armed again (a
// transaction that rewrites pending_event_id, a later ballot) and written
// again: a late copy of the earlier write carries an earlier timestamp,
// so it is at worst a duplicate before the good one.
func (r Orders) publish(ctx context.Context, id string, ev outbox.Message, armed time.Time) error {
	var err error
	for attempt := 0; attempt < r.s.attempts && ctx.Err() == nil; attempt++ {
		if armed.IsZero() || attempt > 0 {
			r.step("arm", attempt)
			armed = time.Now()
			var applied bool
			applied, err = r.s.session.Query(`UPDATE `+r.s.keyspace+`.orders SET pending_event_id = ? WHERE id = ? IF pending_event_id = ?`,
				gocql.UUID(ev.ID), id, gocql.UUID(ev.ID)).WithContext(ctx).MapScanCAS(map[string]any{})
			if err != nil {
				continue
			}
			if !applied {
				return nil // no longer pending: written and cleared by another
			}
		}
		r.step("read", attempt)
		var pendingID gocql.UUID
		var ts int64
		if err = r.s.session.Query(`SELECT pending_event_id, WRITETIME(pending_event_id) FROM `+r.s.keyspace+`.orders WHERE id = ?`, id).
			WithContext(ctx).Scan(&pendingID, &ts); err != nil {
			continue
		}
		if pendingID != gocql.UUID(ev.ID) {
			return nil
		}
		r.step("event", attempt)
		if err = r.s.session.Query(r.s.outboxInsert()+` USING TIMESTAMP ?`, append(outboxArgs(ev), ts)...).WithContext(ctx).Exec(); err != nil {
			continue
		}
		if took := time.Since(armed); took > r.s.eventDeadline {
			err = fmt.Errorf("acknowledged %s after its timestamp was taken, past %s: the CDC reader may have passed it", took.Round(time.Millisecond), r.s.eventDeadline)
			continue
		}
		r.step("clear", attempt)
		return r.clearPending(ctx, id, ev)
	}
	return fmt.Errorf("scylla: order %s: event %s not written: %w", id, ev.ID, err)
}

func (r Orders) clearPending(ctx context.Context, id string, ev outbox.Message) error {
	err := r.retry(ctx, "clear", func() error {
		_, err := r.s.session.Query(`UPDATE `+r.s.keyspace+`.orders SET pending_event = null, pending_event_id = null
			WHERE id = ? IF pending_event_id = ?`, id, gocql.UUID(ev.ID)).WithContext(ctx).MapScanCAS(map[string]any{})
		return err
	})
	if err != nil {
		return r.failed(fmt.Sprintf("order %s: clear pending event", id), err)
	}
	return nil
}

// rollForward writes the order's pending event, if any, and clears it.
func (r Orders) rollForward(ctx context.Context, id string) error {
	_, ev, err := r.get(ctx, id)
	if err != nil || ev == nil {
		return err
	}
	return r.publish(ctx, id, *ev, time.Time{})
}
