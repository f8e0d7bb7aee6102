package scylla

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

// SchemaOptions shape the keyspace.
type SchemaOptions struct {
	// Replication is the keyspace's replication map (default
	// {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}).
	Replication string
	// WithoutCDC leaves CDC off, for Cassandra, which has no Scylla CDC.
	WithoutCDC bool
	// CDCTTL is how long the CDC log keeps a change (default 24 h, as
	// ScyllaDB's). Give the relay's CDCConfig.LogTTL the same value.
	CDCTTL time.Duration
}

// DefaultCDCTTL is ScyllaDB's default CDC log TTL.
const DefaultCDCTTL = 24 * time.Hour

var keyspaceName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

// Schema returns the CQL statements that create the keyspace and tables.
func Schema(keyspace string, opts SchemaOptions) ([]string, error) {
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
		`CREATE TABLE IF NOT EXISTS ` + ks + `orders (
			id text PRIMARY KEY, customer_id text, items text, currency text, address text,
			status text, total bigint, version bigint, created_at bigint, updated_at bigint,
			pending_event text, pending_event_id uuid)`,
		// Updates whose outbox row may not be written yet, for the sweeper.
		`CREATE TABLE IF NOT EXISTS ` + ks + `order_intents (
			bucket int, order_id text, version bigint, created_at bigint,
			PRIMARY KEY ((bucket), order_id, version))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `order_idempotency_keys (
			key text PRIMARY KEY, request_hash text, order_id text, intent text, done boolean, created_at bigint)`,
		// One partition per aggregate: its events land in one CDC stream,
		// in clustering (commit) order.
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_messages (
			aggregatetype text, aggregateid text, event_time timeuuid,
			id uuid, type text, sequence bigint, payload text, headers map<text, text>, timestamp bigint,
			PRIMARY KEY ((aggregatetype, aggregateid), event_time))` + cdc,
		// Dead letters are rare and listed by id: one partition, clustered
		// by an id drawn from an LWT sequence.
		`CREATE TABLE IF NOT EXISTS ` + ks + `dead_letter_queue (
			bucket int, id bigint, event_id uuid, aggregatetype text, aggregateid text, type text, sequence bigint,
			payload text, headers map<text, text>, timestamp bigint, error text, failure_count int,
			first_failed_at bigint, last_failed_at bigint, status text, parked_behind text,
			replay_count int, resolved_at bigint, resolution text,
			PRIMARY KEY ((bucket), id))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `parked_aggregates (
			aggregatetype text, aggregateid text, parked_at bigint, pending_action text, pending_entry bigint, reason text,
			requested_at bigint, last_error text,
			PRIMARY KEY ((aggregatetype, aggregateid)))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_sequences (name text PRIMARY KEY, next bigint)`,
		// Progress per CDC stream, with the lease epoch that wrote it.
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_cdc_progress (
			generation timestamp, table_name text, stream_id blob, last_timeuuid timeuuid, epoch bigint,
			PRIMARY KEY ((generation, table_name, stream_id)))`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_cdc_generation (
			name text PRIMARY KEY, generation timestamp, epoch bigint)`,
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_relay_lease (
			name text PRIMARY KEY, owner text, epoch bigint, expires timestamp)`,
	}, nil
}

// addedColumns are columns added after a table was first released:
// CREATE TABLE IF NOT EXISTS leaves an older table as it was.
var addedColumns = []struct{ table, column, typ string }{
	{"parked_aggregates", "pending_entry", "bigint"},
}

// Migrate applies the schema; every statement is idempotent.
func Migrate(ctx context.Context, session *gocql.Session, keyspace string, opts SchemaOptions) error {
	stmts, err := Schema(keyspace, opts)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if err := session.Query(st).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("scylla: migrate: %s: %w", strings.Fields(st)[2], err)
		}
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
	return nil
}
