package scylla

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/internal/tlsconfig"
)

// URLConfig is everything a scylla:// URL configures: the store's, the
// schema's and the CDC reader's configuration.
type URLConfig struct {
	Config Config
	Schema SchemaConfig
	CDC    CDCConfig
}

// ParseURL reads scylla://[user[:password]@]host1,host2[:port]/keyspace
// with the options consistency (writes: local_quorum, the default,
// quorum, each_quorum or all; see checkConsistency), local_dc (required
// on a cluster of several data centres), rf (replication
// factor for migrate, NetworkTopologyStrategy, default 3), cdc_ttl
// (default 24h), idempotency_ttl (how long an idempotency key is kept,
// default 24h, whole seconds from 1m), profile=low-latency for the CDC reader's
// low-latency profile, from (where a relay's first start on the table
// reads from: oldest, the default, or an RFC 3339 time), lease_ttl (how long a standby relay waits for a
// silent holder's lease, default 30s, 2s to 10m), and tls=true with
// ca_file, cert_file, key_file and server_name. Errors never repeat the
// password.
func ParseURL(raw string) (URLConfig, error) {
	var st URLConfig
	u, err := url.Parse(raw)
	if err != nil {
		return st, fmt.Errorf("scylla: the store URL does not parse as scylla://host,host/keyspace")
	}
	if u.Scheme != "scylla" {
		return st, fmt.Errorf("scylla: %q is not a scylla://host,host/keyspace URL", u.Redacted())
	}
	if u.User != nil {
		st.Config.Username = u.User.Username()
		st.Config.Password, _ = u.User.Password()
	}
	if u.Host == "" {
		return st, fmt.Errorf("scylla: the URL names no host")
	}
	st.Config.Hosts = strings.Split(u.Host, ",")
	st.Config.Keyspace = strings.Trim(u.Path, "/")
	if !keyspaceName.MatchString(st.Config.Keyspace) {
		return st, fmt.Errorf("scylla: keyspace %q must be a lower-case identifier", st.Config.Keyspace)
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "consistency", "local_dc", "from", "rf", "cdc_ttl", "idempotency_ttl", "profile", "lease_ttl", "tls", "ca_file", "cert_file", "key_file", "server_name":
		default:
			return st, fmt.Errorf("scylla: unknown URL option %q", k)
		}
	}
	if c := q.Get("consistency"); c != "" {
		if err := st.Config.Consistency.UnmarshalText([]byte(strings.ToUpper(c))); err != nil {
			return st, fmt.Errorf("scylla: consistency %q: %w", c, err)
		}
		// ANY is gocql's zero value, which Open reads as "default".
		if err := checkConsistency(st.Config.Consistency); err != nil || strings.EqualFold(c, "any") {
			return st, fmt.Errorf("scylla: consistency=%s: %w", c, cmp.Or(err, checkConsistency(gocql.Any)))
		}
	}
	st.Config.LocalDC = q.Get("local_dc")
	rf := 3
	if v := q.Get("rf"); v != "" {
		if rf, err = strconv.Atoi(v); err != nil || rf < 1 || rf > 9 {
			return st, fmt.Errorf("scylla: rf must be 1 to 9, got %q", v)
		}
	}
	st.Schema.Replication = fmt.Sprintf("{'class': 'NetworkTopologyStrategy', 'replication_factor': %d}", rf)
	if v := q.Get("cdc_ttl"); v != "" {
		if st.Schema.CDCTTL, err = time.ParseDuration(v); err != nil || st.Schema.CDCTTL < time.Minute {
			return st, fmt.Errorf("scylla: cdc_ttl must be a duration of at least 1m, got %q", v)
		}
	}
	if v := q.Get("idempotency_ttl"); v != "" {
		if st.Config.IdempotencyTTL, err = time.ParseDuration(v); err != nil || !validIdempotencyTTL(st.Config.IdempotencyTTL) {
			return st, fmt.Errorf("scylla: idempotency_ttl must be a duration of whole seconds from 1m to 175200h (20 years, CQL's TTL limit), got %q", v)
		}
	}
	switch p := q.Get("profile"); p {
	case "":
	case "low-latency":
		st.CDC = LowLatency()
	default:
		return st, fmt.Errorf("scylla: profile must be low-latency, got %q", p)
	}
	st.CDC.LogTTL = st.Schema.CDCTTL
	if v := q.Get("lease_ttl"); v != "" {
		// Renewed every third of it: much shorter and a busy cluster's
		// slow lightweight transaction loses the lease.
		if st.CDC.LeaseTTL, err = time.ParseDuration(v); err != nil || st.CDC.LeaseTTL < 2*time.Second || st.CDC.LeaseTTL > 10*time.Minute {
			return st, fmt.Errorf("scylla: lease_ttl must be a duration from 2s to 10m, got %q", v)
		}
	}
	// An event's outbox write must be acknowledged well within the
	// reader's confidence window of its timestamp (see Orders.publish).
	st.Config.EventWriteDeadline = cmp.Or(st.CDC.ConfidenceWindow, defaultConfidenceWindow) / 2
	if v := q.Get("from"); v != "" && v != "oldest" {
		if st.CDC.From, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return st, fmt.Errorf("scylla: from must be oldest or an RFC 3339 time such as 2026-11-30T10:00:00Z, got %q", v)
		}
	}
	useTLS := q.Get("ca_file") != "" || q.Get("cert_file") != "" || q.Get("server_name") != ""
	if v := q.Get("tls"); v != "" {
		if useTLS, err = strconv.ParseBool(v); err != nil {
			return st, fmt.Errorf("scylla: tls must be true or false, got %q", v)
		}
	}
	if useTLS {
		if st.Config.TLS, err = tlsconfig.Client(q.Get("ca_file"), q.Get("cert_file"), q.Get("key_file"), q.Get("server_name")); err != nil {
			return st, fmt.Errorf("scylla: tls: %w", err)
		}
	}
	return st, nil
}

// Migrate applies the schema and reports how many statements ran.
func (s *Store) Migrate(ctx context.Context, opts SchemaConfig) (int, error) {
	stmts, err := Schema(s.keyspace, opts)
	if err != nil {
		return 0, err
	}
	return len(stmts), Migrate(ctx, s.session, s.keyspace, opts)
}

// Ping checks the cluster answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.session.Query(`SELECT release_version FROM system.local`).WithContext(ctx).Consistency(gocql.One).Exec()
}
