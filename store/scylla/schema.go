package scylla

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/gocql/gocql"
)

// SchemaOptions shape the keyspace.
type SchemaOptions struct {
	// Replication is the keyspace's replication map (default
	// {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}).
	Replication string
	// WithoutCDC leaves CDC off, for Cassandra, which has no Scylla CDC.
	WithoutCDC bool
}

var keyspaceName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

// Schema returns the CQL statements that create the keyspace and tables.
func Schema(keyspace string, opts SchemaOptions) ([]string, error) {
	if !keyspaceName.MatchString(keyspace) {
		return nil, fmt.Errorf("scylla: keyspace %q must be a lower-case identifier", keyspace)
	}
	if opts.Replication == "" {
		opts.Replication = `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`
	}
	cdc := ` WITH cdc = {'enabled': true, 'preimage': false, 'postimage': false}`
	if opts.WithoutCDC {
		cdc = ""
	}
	ks := keyspace + "."
	return []string{
		`CREATE KEYSPACE IF NOT EXISTS ` + keyspace + ` WITH replication = ` + opts.Replication,
		`CREATE TABLE IF NOT EXISTS ` + ks + `orders (
			id text PRIMARY KEY, customer_id text, items text, currency text, address text,
			status text, total bigint, version bigint, created_at timestamp, updated_at timestamp)`,
		// One partition per aggregate: its events land in one CDC stream,
		// in clustering (commit) order.
		`CREATE TABLE IF NOT EXISTS ` + ks + `outbox_messages (
			aggregatetype text, aggregateid text, event_time timeuuid,
			id uuid, type text, sequence bigint, payload text, headers map<text, text>, timestamp timestamp,
			PRIMARY KEY ((aggregatetype, aggregateid), event_time))` + cdc,
		`CREATE TABLE IF NOT EXISTS ` + ks + `dead_letter_queue (
			aggregatetype text, aggregateid text, id timeuuid, event_id uuid, type text, sequence bigint,
			payload text, headers map<text, text>, timestamp timestamp, error text, failure_count int,
			first_failed_at timestamp, last_failed_at timestamp, status text, parked_behind text,
			replay_count int, resolved_at timestamp, resolution text,
			PRIMARY KEY ((aggregatetype, aggregateid), id))`,
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
	return nil
}
