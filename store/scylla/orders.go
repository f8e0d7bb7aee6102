package scylla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Orders is the order repository on CQL.
//
// A create is one LOGGED BATCH (order row and outbox row). An update
// needs optimistic concurrency (IF version = n-1), and a lightweight
// transaction cannot share a batch with another partition. So an update
// is a write-ahead intent instead:
//
//  1. note the order in order_intents (for the sweeper);
//  2. one LWT on the order row sets the new state and pending_event,
//     IF version = n-1 AND pending_event_id = null;
//  3. write the outbox row (the same key every time, see eventTime);
//  4. one LWT clears pending_event; then the intent note is deleted.
//
// Once step 2 applies, the event is durable in the same partition as the
// state it describes, and whoever comes next rolls it forward: the next
// update of the order (its step 2 refuses while an event is pending) or
// the sweeper (RollForward). The condition on pending_event_id is what
// keeps events in order: version n+1 cannot be written until version n's
// outbox row is. A roll-forward racing the original writer writes the
// same row twice, which CDC may publish twice: at least once, never lost.
type Orders struct {
	s *Store
	// crashAfterClaim stops an update after its LWT, as a crash would
	// (tests only).
	crashAfterClaim bool
}

var _ order.Repository = Orders{}

// Orders returns the repository.
func (s *Store) Orders() Orders { return Orders{s: s} }

const orderColumns = `id, customer_id, items, currency, address, status, total, version, created_at, updated_at, pending_event`

var errSimulatedCrash = errors.New("scylla: simulated crash after the update's LWT")

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

// createIntent is what an idempotency key remembers, so a request that
// died between claiming the key and writing its batch is rolled forward
// by its retry.
type createIntent struct {
	Order order.Order    `json:"order"`
	Event outbox.Message `json:"event"`
}

// Create implements order.Repository.
func (r Orders) Create(ctx context.Context, o order.Order, ev outbox.Message, key, hash string) (order.Order, bool, error) {
	if key == "" {
		if err := r.s.AppendWithOrder(ctx, o, ev); err != nil {
			return order.Order{}, false, err
		}
		return o, false, nil
	}
	intent, err := json.Marshal(createIntent{o, ev})
	if err != nil {
		return order.Order{}, false, err
	}
	prev := map[string]any{}
	// The key lives for the retention window, as a TTL: a retry after it
	// finds no key and creates a new order.
	claimed := time.Now()
	applied, err := r.s.session.Query(`INSERT INTO `+r.s.keyspace+`.order_idempotency_keys (key, request_hash, order_id, intent, done, created_at)
		VALUES (?, ?, ?, ?, false, ?) IF NOT EXISTS USING TTL ?`, key, hash, o.ID, string(intent), micros(o.CreatedAt), ttlSeconds(r.s.keyTTL)).
		WithContext(ctx).MapScanCAS(prev)
	if err != nil {
		return order.Order{}, false, fmt.Errorf("scylla: claim idempotency key: %w", err)
	}
	if !applied {
		if prev["request_hash"] != hash {
			return order.Order{}, false, fmt.Errorf("scylla: create order: %w", order.ErrIdempotencyKey)
		}
		if done, _ := prev["done"].(bool); !done {
			var ci createIntent
			if err := json.Unmarshal([]byte(fmt.Sprint(prev["intent"])), &ci); err != nil {
				return order.Order{}, false, fmt.Errorf("scylla: idempotency key %q: corrupt intent: %w", key, err)
			}
			if err := r.completeCreate(ctx, key, ci); err != nil {
				return order.Order{}, false, err
			}
		}
		got, err := r.Get(ctx, fmt.Sprint(prev["order_id"]))
		return got, true, err
	}
	if err := r.s.AppendWithOrder(ctx, o, ev); err != nil {
		return order.Order{}, false, err
	}
	if ttl, ok := doneTTL(r.s.keyTTL - time.Since(claimed)); ok {
		if err := r.markDone(ctx, key, ttl); err != nil {
			return order.Order{}, false, err
		}
	}
	return o, false, nil
}

// ttlSeconds is d as a CQL TTL.
func ttlSeconds(d time.Duration) int { return int(d / time.Second) }

// doneTTL is the TTL of a key's done flag when its claim has left to
// live. An UPDATE keeps a row alive while any cell of it lives, and a row
// left with done alone once the claim expired would refuse every retry of
// the key as another request's; so the flag goes a second before the
// claim (TTLs count whole seconds on the server). ok is false when too
// little is left to write it: a retry in those last seconds finds the key
// not done and finishes it again, rewriting the same event row (the same
// event id, which consumers drop).
func doneTTL(left time.Duration) (ttl int, ok bool) {
	ttl = ttlSeconds(left) - 1
	return ttl, ttl >= 1
}

// completeCreate rolls a claimed key forward. The order row is written
// only if absent (a later update must not be undone); the outbox row is
// always written, since it cannot be known whether the batch applied.
func (r Orders) completeCreate(ctx context.Context, key string, ci createIntent) error {
	o := ci.Order
	stmt, args, err := r.orderInsert(o)
	if err != nil {
		return err
	}
	if _, err := r.s.session.Query(stmt+` IF NOT EXISTS`, args...).
		WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("scylla: roll forward order %s: %w", o.ID, err)
	}
	if err := r.s.writeEvent(ctx, ci.Event); err != nil {
		return fmt.Errorf("scylla: roll forward event %s: %w", ci.Event.ID, err)
	}
	var left *int
	err = r.s.session.Query(`SELECT TTL(request_hash) FROM `+r.s.keyspace+`.order_idempotency_keys WHERE key = ?`, key).
		WithContext(ctx).Scan(&left)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return nil // the key expired meanwhile: a flag would bring back a row of it alone
	case err != nil:
		return fmt.Errorf("scylla: idempotency key %q: read its TTL: %w", key, err)
	case left == nil:
		return r.markDone(ctx, key, 0) // claimed before keys expired: it never expires
	}
	if ttl, ok := doneTTL(time.Duration(*left) * time.Second); ok {
		return r.markDone(ctx, key, ttl)
	}
	return nil
}

// markDone sets the key's done flag with a TTL in seconds (0: none; see
// doneTTL).
func (r Orders) markDone(ctx context.Context, key string, ttl int) error {
	if err := r.s.session.Query(`UPDATE `+r.s.keyspace+`.order_idempotency_keys USING TTL ? SET done = true WHERE key = ?`, ttl, key).
		WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scylla: idempotency key %q: %w", key, err)
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
		return o, nil, fmt.Errorf("scylla: order %s: %w", id, err)
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
	items, err := json.Marshal(o.Items)
	if err != nil {
		return err
	}
	pending, err := json.Marshal(pendingEvent{ev})
	if err != nil {
		return err
	}
	ks := r.s.keyspace
	if err := r.s.session.Query(`INSERT INTO `+ks+`.order_intents (bucket, order_id, version, created_at) VALUES (0, ?, ?, ?)`,
		o.ID, o.Version, micros(time.Now())).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scylla: update order %s: intent: %w", o.ID, err)
	}
	for attempt := 0; ; attempt++ {
		prev := map[string]any{}
		applied, err := r.s.session.Query(`UPDATE `+ks+`.orders SET items = ?, address = ?, status = ?, total = ?, version = ?, updated_at = ?,
			pending_event = ?, pending_event_id = ? WHERE id = ? IF version = ? AND pending_event_id = null`,
			string(items), o.Address, string(o.Status), o.Total, o.Version, micros(o.UpdatedAt), string(pending), gocql.UUID(ev.ID),
			o.ID, o.Version-1).WithContext(ctx).MapScanCAS(prev)
		if err != nil {
			return fmt.Errorf("scylla: update order %s to version %d: %w", o.ID, o.Version, err)
		}
		if applied && r.crashAfterClaim {
			return errSimulatedCrash
		}
		if applied {
			break
		}
		if v, _ := prev["version"].(int64); v != o.Version-1 || attempt > 0 {
			r.dropIntent(ctx, o.ID, o.Version)
			return fmt.Errorf("scylla: update order %s to version %d: %w", o.ID, o.Version, order.ErrConflict)
		}
		// The version matches but the previous update's event is still
		// pending: publish it first, or this one would overtake it.
		if err := r.rollForward(ctx, o.ID); err != nil {
			return err
		}
		r.dropIntent(ctx, o.ID, o.Version-1)
	}
	if err := r.s.writeEvent(ctx, ev); err != nil {
		return fmt.Errorf("scylla: update order %s: event (the sweeper will finish it): %w", o.ID, err)
	}
	if err := r.clearPending(ctx, o.ID, ev); err != nil {
		return err
	}
	r.dropIntent(ctx, o.ID, o.Version)
	return nil
}

func (r Orders) clearPending(ctx context.Context, id string, ev outbox.Message) error {
	_, err := r.s.session.Query(`UPDATE `+r.s.keyspace+`.orders SET pending_event = null, pending_event_id = null
		WHERE id = ? IF pending_event_id = ?`, id, gocql.UUID(ev.ID)).WithContext(ctx).MapScanCAS(map[string]any{})
	if err != nil {
		return fmt.Errorf("scylla: order %s: clear pending event: %w", id, err)
	}
	return nil
}

// dropIntent is best effort: a leftover note costs the sweeper one read.
func (r Orders) dropIntent(ctx context.Context, id string, version int64) {
	_ = r.s.session.Query(`DELETE FROM `+r.s.keyspace+`.order_intents WHERE bucket = 0 AND order_id = ? AND version = ?`, id, version).
		WithContext(ctx).Exec()
}

// rollForward writes the order's pending event, if any, and clears it.
func (r Orders) rollForward(ctx context.Context, id string) error {
	_, ev, err := r.get(ctx, id)
	if err != nil || ev == nil {
		return err
	}
	if err := r.s.writeEvent(ctx, *ev); err != nil {
		return fmt.Errorf("scylla: roll forward event %s: %w", ev.ID, err)
	}
	return r.clearPending(ctx, id, *ev)
}

// RollForward finishes updates whose writer died after its LWT: every
// intent older than minAge (younger ones may still be in flight) has its
// pending event written and cleared. It returns how many it finished.
func (r Orders) RollForward(ctx context.Context, minAge time.Duration) (int, error) {
	iter := r.s.session.Query(`SELECT order_id, version, created_at FROM ` + r.s.keyspace + `.order_intents WHERE bucket = 0`).
		WithContext(ctx).Iter()
	type note struct {
		id      string
		version int64
	}
	var due []note
	var n note
	var created int64
	cutoff := micros(time.Now().Add(-minAge))
	for iter.Scan(&n.id, &n.version, &created) {
		if created <= cutoff {
			due = append(due, n)
		}
	}
	if err := iter.Close(); err != nil {
		return 0, fmt.Errorf("scylla: order intents: %w", err)
	}
	for _, d := range due {
		if err := r.rollForward(ctx, d.id); err != nil && !errors.Is(err, order.ErrNotFound) {
			return 0, err
		}
		r.dropIntent(ctx, d.id, d.version)
	}
	return len(due), nil
}

// InsertPlain writes an order row without its event (a benchmark's
// baseline).
func (r Orders) InsertPlain(ctx context.Context, o order.Order) error {
	stmt, args, err := r.orderInsert(o)
	if err != nil {
		return err
	}
	return r.s.session.Query(stmt, args...).WithContext(ctx).Exec()
}
