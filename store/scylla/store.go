package scylla

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
)

// Config connects to a cluster. Its zero value needs Hosts and Keyspace.
type Config struct {
	Hosts    []string
	Keyspace string
	// Consistency of writes (default LOCAL_QUORUM). A LOGGED BATCH at
	// LOCAL_QUORUM that times out may or may not have applied: see
	// DESIGN.md for which writes are safe to retry.
	Consistency gocql.Consistency
	Timeout     time.Duration
	// ProtoVersion pins the native protocol (0: negotiate; Apache
	// Cassandra 5 needs 4 with this driver).
	ProtoVersion int
	// TLS encrypts client connections, always verifying the node's
	// certificate and host name. Nodes are dialled by IP: certificates
	// need IP SANs, or set TLS.ServerName.
	TLS *tls.Config
	// Username and Password use the PasswordAuthenticator.
	Username, Password string
	// IdempotencyTTL is how long an idempotency key replays its order
	// (default DefaultIdempotencyTTL): its row is written with this TTL,
	// in whole seconds from a minute up to CQL's limit of 20 years. A
	// retry after it creates a new order.
	IdempotencyTTL time.Duration
}

// DefaultIdempotencyTTL keeps idempotency keys for a day, as the SQL
// stores do.
const DefaultIdempotencyTTL = 24 * time.Hour

// maxTTL is the longest TTL Cassandra and ScyllaDB accept.
const maxTTL = 20 * 365 * 24 * time.Hour

func validIdempotencyTTL(d time.Duration) bool {
	return d >= time.Minute && d <= maxTTL && d%time.Second == 0
}

// Store writes orders and outbox rows.
type Store struct {
	session  *gocql.Session
	keyspace string
	cl       gocql.Consistency
	keyTTL   time.Duration
}

// Open connects.
func Open(cfg Config) (*Store, error) {
	if len(cfg.Hosts) == 0 || cfg.Keyspace == "" {
		return nil, fmt.Errorf("scylla: Hosts and Keyspace are required")
	}
	if !keyspaceName.MatchString(cfg.Keyspace) {
		return nil, fmt.Errorf("scylla: keyspace %q must be a lower-case identifier", cfg.Keyspace)
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if !validIdempotencyTTL(cfg.IdempotencyTTL) {
		return nil, fmt.Errorf("scylla: IdempotencyTTL must be whole seconds from 1m to 20 years (a CQL TTL), got %s", cfg.IdempotencyTTL)
	}
	c := gocql.NewCluster(cfg.Hosts...)
	// Discovered peers are dialled on the cluster's port: take it from the
	// hosts when they name one, or a non-default port is lost.
	if _, port, err := net.SplitHostPort(cfg.Hosts[0]); err == nil {
		if p, err := strconv.Atoi(port); err == nil {
			c.Port = p
		}
	}
	if cfg.Consistency == 0 {
		cfg.Consistency = gocql.LocalQuorum
	}
	c.Consistency = cfg.Consistency
	if cfg.Timeout > 0 {
		c.Timeout = cfg.Timeout
	}
	if cfg.ProtoVersion > 0 {
		c.ProtoVersion = cfg.ProtoVersion
	}
	if cfg.TLS != nil {
		c.SslOpts = &gocql.SslOptions{Config: cfg.TLS.Clone(), EnableHostVerification: true}
	}
	if cfg.Username != "" {
		c.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	s, err := c.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("scylla: connect to %v: %w", cfg.Hosts, err)
	}
	return &Store{session: s, keyspace: cfg.Keyspace, cl: cfg.Consistency, keyTTL: cfg.IdempotencyTTL}, nil
}

// Session exposes the session (the CDC reader needs it).
func (s *Store) Session() *gocql.Session { return s.session }

// Close closes the session; it is safe to call more than once.
func (s *Store) Close() error {
	s.session.Close()
	return nil
}

// outboxInsert is the CQL of one outbox row; the event_time timeuuid is
// built from the event's own time so a retried batch writes the same row.
func (s *Store) outboxInsert() string {
	return `INSERT INTO ` + s.keyspace + `.outbox_messages
		(aggregatetype, aggregateid, event_time, id, type, sequence, payload, headers, timestamp)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
}

func outboxArgs(m outbox.Message) []any {
	return []any{m.AggregateType, m.AggregateID, eventTime(m), gocql.UUID(m.ID), m.Type, m.Sequence, string(m.Payload), m.Headers, m.Timestamp.UnixMicro()}
}

// eventTime is the clustering timeuuid after sequence, built from the
// event's time and id: it keeps apart rows of one sequence, and the same
// event always gets the same key, so a batch retried after a timeout
// overwrites instead of duplicating. It does not order an aggregate's
// events (sequence does): their times may be equal or go backwards.
func eventTime(m outbox.Message) gocql.UUID {
	u := gocql.UUIDFromTime(m.Timestamp)
	copy(u[8:], m.ID[8:]) // clock sequence and node from the event id
	u[8] = u[8]&0x3f | 0x80
	return u
}

// eventsBatch starts a LOGGED BATCH holding msgs' outbox rows.
func (s *Store) eventsBatch(ctx context.Context, msgs []outbox.Message) (*gocql.Batch, error) {
	b := s.session.NewBatch(gocql.LoggedBatch).WithContext(ctx)
	b.SetConsistency(s.cl)
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return nil, err
		}
		b.Query(s.outboxInsert(), outboxArgs(m)...)
	}
	return b, nil
}

// writeEvent writes one outbox row on its own: rewriting it is harmless,
// its key being fixed by the event.
func (s *Store) writeEvent(ctx context.Context, m outbox.Message) error {
	return s.session.Query(s.outboxInsert(), outboxArgs(m)...).WithContext(ctx).Exec()
}

// AppendWithOrder writes the order row and its events in one LOGGED BATCH.
func (s *Store) AppendWithOrder(ctx context.Context, o order.Order, msgs ...outbox.Message) error {
	b, err := s.eventsBatch(ctx, msgs)
	if err != nil {
		return err
	}
	stmt, args, err := s.Orders().orderInsert(o)
	if err != nil {
		return err
	}
	b.Query(stmt, args...)
	if err := s.session.ExecuteBatch(b); err != nil {
		return fmt.Errorf("scylla: logged batch for order %s: %w", o.ID, err)
	}
	return nil
}

// AppendEvents writes events with no domain row, in one LOGGED BATCH.
func (s *Store) AppendEvents(ctx context.Context, msgs ...outbox.Message) error {
	b, err := s.eventsBatch(ctx, msgs)
	if err != nil {
		return err
	}
	if err := s.session.ExecuteBatch(b); err != nil {
		return fmt.Errorf("scylla: append events: %w", err)
	}
	return nil
}

// ScanOutbox reads every outbox row, each aggregate's in order: a full
// table scan, for the demo's checker and tests, not for production paths.
func (s *Store) ScanOutbox(ctx context.Context) ([]outbox.Message, error) {
	iter := s.session.Query(`SELECT id, aggregatetype, aggregateid, type, sequence, timestamp FROM ` + s.keyspace + `.outbox_messages`).
		WithContext(ctx).PageSize(5000).Iter()
	var out []outbox.Message
	var m outbox.Message
	var id gocql.UUID
	var us int64
	for iter.Scan(&id, &m.AggregateType, &m.AggregateID, &m.Type, &m.Sequence, &us) {
		m.ID, m.Timestamp = uuid.UUID(id), time.UnixMicro(us).UTC()
		out = append(out, m)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: scan outbox: %w", err)
	}
	return out, nil
}

// CountRows counts order and outbox rows: full scans, for tests.
func (s *Store) CountRows(ctx context.Context) (orders, events int64, err error) {
	if err = s.session.Query(`SELECT count(*) FROM ` + s.keyspace + `.orders`).WithContext(ctx).Scan(&orders); err != nil {
		return 0, 0, err
	}
	err = s.session.Query(`SELECT count(*) FROM ` + s.keyspace + `.outbox_messages`).WithContext(ctx).Scan(&events)
	return orders, events, err
}
