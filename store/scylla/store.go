package scylla

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/outbox"
)

// Config connects to a cluster. Its zero value needs Hosts and Keyspace.
type Config struct {
	Hosts    []string
	Keyspace string
	// Consistency of writes (default LOCAL_QUORUM): LOCAL_QUORUM,
	// QUORUM (one data centre only), EACH_QUORUM or ALL, so every
	// acknowledged write is on a replica the CDC reader's LOCAL_QUORUM
	// read asks (see checkConsistency).
	Consistency gocql.Consistency
	// LocalDC pins coordinators to one data centre, the one the relay
	// reads in; required when the cluster has several.
	LocalDC string
	Timeout time.Duration
	// ProtoVersion pins the native protocol (0: negotiate; Apache
	// Cassandra 5 needs 4 with this driver).
	ProtoVersion int
	// TLS encrypts client connections, always verifying the node's
	// certificate and host name. Nodes are dialled by IP: certificates
	// need IP SANs, or set TLS.ServerName.
	TLS *tls.Config
	// Username and Password use the PasswordAuthenticator.
	Username, Password string
	// WriteAttempts bounds the attempts of an order write whose outcome
	// is unknown (it timed out) before the request is answered
	// order.ErrUnavailable (default 3).
	WriteAttempts int
	// EventWriteDeadline: an event's outbox write counts only if it was
	// acknowledged within this long of taking its timestamp, or the CDC
	// reader may already have passed it (default 1 s; ParseURL sets half
	// the reader's confidence window). Writers and the relay must use the
	// same profile.
	EventWriteDeadline time.Duration
	// QueryObserver, when set, hears every statement the store runs (for
	// metrics).
	QueryObserver gocql.QueryObserver
	// Logger hears what the store cannot return: an event left for the
	// sweeper after its change was committed (default slog.Default()).
	Logger *slog.Logger
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
	session       *gocql.Session
	keyspace      string
	cl            gocql.Consistency
	keyTTL        time.Duration
	attempts      int
	eventDeadline time.Duration
	log           atomic.Pointer[slog.Logger]
	// now, when set, stands for the cluster's clock (tests only).
	now func() time.Time
	// legacyAt is when the notes of earlier releases were last found
	// swept (unix µs).
	legacyAt atomic.Int64
	// dlqBucketSize is how many consecutive dead-letter ids share a
	// partition; dlqFrom is the first id of that layout (0: not read yet).
	dlqBucketSize int64
	dlqFrom       atomic.Int64
}

// Open connects.
func Open(cfg Config) (*Store, error) { return open(cfg, nil) }

// open is Open with the driver's configuration adjusted by tweak (tests:
// a dialer).
func open(cfg Config, tweak func(*gocql.ClusterConfig)) (*Store, error) {
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
	if err := checkConsistency(cfg.Consistency); err != nil {
		return nil, err
	}
	c.Consistency = cfg.Consistency
	if cfg.LocalDC != "" {
		c.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.DCAwareRoundRobinPolicy(cfg.LocalDC))
	}
	if cfg.Timeout > 0 {
		c.Timeout = cfg.Timeout
	}
	if cfg.ProtoVersion > 0 {
		c.ProtoVersion = cfg.ProtoVersion
	}
	if cfg.TLS != nil {
		c.SslOpts = &gocql.SslOptions{Config: cfg.TLS.Clone(), EnableHostVerification: true}
	}
	c.QueryObserver = cfg.QueryObserver
	if cfg.Username != "" {
		c.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	st := &Store{keyspace: cfg.Keyspace, cl: cfg.Consistency, keyTTL: cfg.IdempotencyTTL, dlqBucketSize: defaultDLQBucketSize}
	st.log.Store(cfg.Logger)
	c.Logger = driverLog{&st.log}
	if tweak != nil {
		tweak(c)
	}
	s, err := c.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("scylla: connect to %v: %w", cfg.Hosts, err)
	}
	dcs, err := dataCentres(s)
	if err == nil {
		err = checkTopology(dcs, cfg.LocalDC, cfg.Consistency)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if cfg.WriteAttempts <= 0 {
		cfg.WriteAttempts = 3
	}
	if cfg.EventWriteDeadline <= 0 {
		cfg.EventWriteDeadline = time.Second
	}
	st.session, st.attempts, st.eventDeadline = s, cfg.WriteAttempts, cfg.EventWriteDeadline
	return st, nil
}

// driverLog hands the driver's log lines (a node it cannot reach, the
// cluster's warnings) to the store's logger, at warn level: they go where
// and as the service's own logs go, not to the standard logger.
type driverLog struct{ log *atomic.Pointer[slog.Logger] }

func (d driverLog) Print(v ...any)            { d.write(fmt.Sprint(v...)) }
func (d driverLog) Printf(f string, v ...any) { d.write(fmt.Sprintf(f, v...)) }
func (d driverLog) Println(v ...any)          { d.write(fmt.Sprintln(v...)) }

func (d driverLog) write(msg string) {
	d.log.Load().Warn("gocql: " + strings.TrimPrefix(strings.TrimSpace(msg), "gocql: "))
}

// ErrUnsafeConsistency is returned by Open and ParseURL for settings
// under which an acknowledged write can be missing from what the CDC
// reader reads, so its event would never be published.
var ErrUnsafeConsistency = errors.New("scylla: unsafe consistency")

// checkConsistency refuses write consistencies whose replicas need not
// overlap the CDC reader's LOCAL_QUORUM. The reader reads a window of the
// log once: a change acknowledged by one replica and absent from the
// replicas that answer the reader's quorum read is passed over for good,
// whatever hints or repair bring later.
func checkConsistency(c gocql.Consistency) error {
	switch c {
	case gocql.LocalQuorum, gocql.Quorum, gocql.EachQuorum, gocql.All:
		return nil
	}
	return fmt.Errorf("%w: writes at %s can be acknowledged by replicas the CDC reader's LOCAL_QUORUM read does not ask, "+
		"and the reader never reads that part of the log again; use local_quorum (the default; with one replica it is the same as one), "+
		"quorum (one data centre), each_quorum or all", ErrUnsafeConsistency, c)
}

// checkTopology refuses, on a cluster of several data centres, a client
// that is not pinned to one (LOCAL_QUORUM would mean the coordinator's,
// which may differ between a write and the reader) or that writes at
// QUORUM (a global quorum may hold one replica of the reader's data
// centre).
func checkTopology(dcs []string, localDC string, c gocql.Consistency) error {
	if localDC != "" && !slices.Contains(dcs, localDC) {
		return fmt.Errorf("%w: local_dc %q is not one of the cluster's data centres %v", ErrUnsafeConsistency, localDC, dcs)
	}
	if len(dcs) <= 1 {
		return nil
	}
	if localDC == "" {
		return fmt.Errorf("%w: the cluster has data centres %v; set local_dc to the one the relay reads in, "+
			"or LOCAL_QUORUM writes and reads may be coordinated in different ones", ErrUnsafeConsistency, dcs)
	}
	if c == gocql.Quorum {
		return fmt.Errorf("%w: QUORUM over data centres %v may leave the reader's data centre one replica; use local_quorum or each_quorum",
			ErrUnsafeConsistency, dcs)
	}
	return nil
}

// dataCentres lists the cluster's data centres as the node answering
// sees them.
func dataCentres(s *gocql.Session) ([]string, error) {
	var dcs []string
	var dc string
	for _, q := range []string{`SELECT data_center FROM system.local`, `SELECT data_center FROM system.peers`} {
		iter := s.Query(q).Consistency(gocql.One).Iter()
		for iter.Scan(&dc) {
			if !slices.Contains(dcs, dc) {
				dcs = append(dcs, dc)
			}
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("scylla: read the cluster's data centres: %w", err)
		}
	}
	return dcs, nil
}

// SetLogger replaces Config.Logger, for a logger made after Open.
func (s *Store) SetLogger(l *slog.Logger) {
	if l != nil {
		s.log.Store(l)
	}
}

// Keyspace names the store's keyspace.
func (s *Store) Keyspace() string { return s.keyspace }

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
