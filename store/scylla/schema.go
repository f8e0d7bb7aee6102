package scylla

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

// SchemaConfig shape the keyspace.
type SchemaConfig struct {
	// Replication is the keyspace's replication map (default
	// {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}).
	Replication string
	// WithoutCDC leaves CDC off, for Cassandra, which has no Scylla CDC.
	WithoutCDC bool
	// CDCTTL is how long the CDC log keeps a change (default 24 h, as
	// ScyllaDB's). Give the relay's CDCConfig.LogTTL the same value.
	CDCTTL time.Duration
}

// ErrOutboxLayout is returned by Migrate when an existing outbox table
// has a primary key this version cannot use; CQL cannot change a primary
// key in place, so the operator must act (see the error's text).
var ErrOutboxLayout = errors.New("scylla: the outbox table's primary key needs rebuilding")

// DefaultCDCTTL is ScyllaDB's default CDC log TTL.
const DefaultCDCTTL = 24 * time.Hour

var keyspaceName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

// Schema returns the CQL statements that create the keyspace and tables.
func Schema(keyspace string, opts SchemaConfig) ([]string, error) {
	if !keyspaceName.MatchString(keyspace) {
		return nil, fmt.Errorf("scylla: keyspace %q must be a lower-case identifier", keyspace)
	}
	if opts.Replication == "" {
		opts.Replication = `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`
	}
	if opts.CDCTTL <= 0 {
		opts.CDCTTL = DefaultCDCTTL
	}
	cdc := fmt.Sprintf(` WITH cdc = {'enabled': true, 'preimage': false, 'postimage': false, 'ttl': %d}`, int64(opts.CDCTTL/time.Second))
	if opts.WithoutCDC {
		cdc = ""
	}
	ks := keyspace + "."
	return []string{
		`CREATE KEYSPACE IF NOT EXISTS ` + keyspace + ` WITH replication = ` + opts.Replication,
		// Times are bigint microseconds: CQL's timestamp keeps only
		// milliseconds, and events carry microseconds everywhere else.
		// pending_event is the write-ahead intent of an update (see
		// orders.go): set by the LWT that bumps the version, cleared once
		// the outbox row is written.
		// Written by lightweight transactions only (see Orders):
		// last_event_id is the latest version's event, how a write whose
		// answer was lost recognises its own.
		`CREATE TABLE IF NOT EXISTS ` + ks + `orders (
			id text PRIMARY KEY, customer_id text, items text, currency text, address text,
			status text, total bigint, version bigint, created_at bigint, updated_at bigint,
			pending_event text, pending_event_id uuid, last_event_id uuid)`,
		// Creates and updates whose outbox row may not be written yet, for
		// the sweeper; bucket is a minute and a shard (see intents.go),
		// intent a create's order and event.
		`CREATE TABLE IF NOT EXISTS ` + ks + `order_intents (
			bucket int, order_id text, version bigint, created_at bigint, intent text,
			PRIMARY KEY ((bucket), order_id, version))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `order_idempotency_keys (
			key text PRIMARY KEY, request_hash text, order_id text, intent text, done boolean, created_at bigint)`,
		// One partition per aggregate: its events land in one CDC stream.
		// Within one change (one LOGGED BATCH) a partition's rows come in
		// clustering order, so sequence clusters first: times of events
		// created back to back are often equal, and clocks of several
		// instances disagree. event_time, fixed by the event, keeps equal
		// sequences (callers that leave it 0) apart and makes a retried
		// batch rewrite its rows. See outboxClustering.
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_messages (
			aggregatetype text, aggregateid text, sequence bigint, event_time timeuuid,
			id uuid, type text, payload text, headers map<text, text>, timestamp bigint,
			PRIMARY KEY ((aggregatetype, aggregateid), ` + strings.Join(outboxClustering, ", ") + `))` + cdc,
		// Dead letters are listed by id, drawn from an LWT sequence; a
		// partition holds a range of ids (see deadletters.go).
		`CREATE TABLE IF NOT EXISTS ` + ks + `dead_letter_queue (
			bucket int, id bigint, event_id uuid, aggregatetype text, aggregateid text, type text, sequence bigint,
			payload text, headers map<text, text>, timestamp bigint, error text, failure_count int,
			first_failed_at bigint, last_failed_at bigint, status text, parked_behind text,
			replay_count int, resolved_at bigint, resolution text,
			PRIMARY KEY ((bucket), id))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `parked_aggregates (
			aggregatetype text, aggregateid text, parked_at bigint, pending_action text, pending_entry bigint, reason text,
			requested_at bigint, last_error text, parked_events int,
			PRIMARY KEY ((aggregatetype, aggregateid)))`,
		// Each aggregate's parked dead letters, by id.
		`CREATE TABLE IF NOT EXISTS ` + ks + `parked_dead_letters (
			aggregatetype text, aggregateid text, id bigint, parked_at bigint,
			PRIMARY KEY ((aggregatetype, aggregateid), id))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_sequences (name text PRIMARY KEY, next bigint)`,
		// Progress per CDC stream, with the lease epoch that wrote it.
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_cdc_progress (
			generation timestamp, table_name text, stream_id blob, last_timeuuid timeuuid, epoch bigint,
			PRIMARY KEY ((generation, table_name, stream_id)))`,
		// start_time: where the first start began reading (see
		// Source.planStart).
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_cdc_generation (
			name text PRIMARY KEY, generation timestamp, epoch bigint, start_time timestamp)`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_relay_lease (
			name text PRIMARY KEY, owner text, epoch bigint, expires timestamp)`,
	}, nil
}

// outboxClustering is the outbox table's clustering key. Releases before
// it clustered by event_time alone.
var outboxClustering = []string{"sequence", "event_time"}

// addedColumns are columns added after a table was first released:
// CREATE TABLE IF NOT EXISTS leaves an older table as it was.
var addedColumns = []struct{ table, column, typ string }{
	{"parked_aggregates", "pending_entry", "bigint"},
	{"outbox_cdc_generation", "start_time", "timestamp"},
	{"orders", "last_event_id", "uuid"},
	{"order_intents", "intent", "text"},
	{"parked_aggregates", "parked_events", "int"},
}

// Migrate applies the schema; every statement is idempotent.
func Migrate(ctx context.Context, session *gocql.Session, keyspace string, opts SchemaConfig) error {
	stmts, err := Schema(keyspace, opts)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if err := session.Query(st).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("scylla: migrate: %s: %w", strings.Fields(st)[2], err)
		}
	}
	if err := checkOutboxKey(ctx, session, keyspace); err != nil {
		return err
	}
	for _, c := range addedColumns {
		var n int
		if err := session.Query(`SELECT count(*) FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?`,
			keyspace, c.table, c.column).WithContext(ctx).Scan(&n); err != nil {
			return fmt.Errorf("scylla: migrate: look for %s.%s: %w", c.table, c.column, err)
		}
		if n == 0 {
			if err := session.Query(`ALTER TABLE ` + keyspace + `.` + c.table + ` ADD ` + c.column + ` ` + c.typ).WithContext(ctx).Exec(); err != nil {
				return fmt.Errorf("scylla: migrate: add %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return initDeadLetterBuckets(ctx, session, keyspace)
}

// checkOutboxKey refuses an outbox table whose clustering key is not
// outboxClustering: CREATE TABLE IF NOT EXISTS leaves an older table as
// it was, and CQL cannot change a primary key in place, so keeping it
// would silently keep the old order.
func checkOutboxKey(ctx context.Context, session *gocql.Session, keyspace string) error {
	iter := session.Query(`SELECT column_name, kind, position FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?`,
		keyspace, "outbox_messages").WithContext(ctx).Iter()
	var clustering []string
	var name, kind string
	var pos int
	for iter.Scan(&name, &kind, &pos) {
		if kind != "clustering" {
			continue
		}
		if pos >= len(clustering) {
			clustering = append(clustering, make([]string, pos+1-len(clustering))...)
		}
		clustering[pos] = name
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("scylla: migrate: read the outbox table's key: %w", err)
	}
	if slices.Equal(clustering, outboxClustering) {
		return nil
	}
	if len(clustering) == 0 {
		return fmt.Errorf("scylla: migrate: %s.outbox_messages has no clustering columns in system_schema.columns", keyspace)
	}
	return fmt.Errorf("%w: %s.outbox_messages is clustered by (%s), which can deliver an aggregate's events out of order; "+
		"this version needs (%s), and CQL cannot change a primary key in place. Either point the store at a new keyspace "+
		"and migrate that, or stop the writers, wait until the relay has published every event (CDC lag 0 for longer than "+
		"the confidence window), then DROP TABLE %s.outbox_messages and run migrate again",
		ErrOutboxLayout, keyspace, strings.Join(clustering, ", "), strings.Join(outboxClustering, ", "), keyspace)
}
