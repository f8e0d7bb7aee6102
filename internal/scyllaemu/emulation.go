package scyllaemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

// TriggerClass is the Cassandra trigger that writes the log rows
// (scripts/cassandra/trigger); Cassandra must load it from its
// triggers_dir.
const TriggerClass = "dev.outbox.scyllaemu.CdcLogTrigger"

// LogSuffix names a table's CDC log, as ScyllaDB does.
const LogSuffix = "_scylla_cdc_log"

// schema is the emulation keyspace, in the layout of the ScyllaDB tables
// it stands in for.
var schema = []string{
	`CREATE KEYSPACE IF NOT EXISTS ` + Keyspace + ` WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
	// system_distributed.cdc_generation_timestamps
	`CREATE TABLE IF NOT EXISTS ` + Keyspace + `.cdc_generation_timestamps (
		key text, time timestamp, expired timestamp,
		PRIMARY KEY (key, time)) WITH CLUSTERING ORDER BY (time DESC)`,
	// system_distributed.cdc_streams_descriptions_v2
	`CREATE TABLE IF NOT EXISTS ` + Keyspace + `.cdc_streams_descriptions_v2 (
		time timestamp, range_end bigint, streams frozen<set<blob>>,
		PRIMARY KEY (time, range_end))`,
	// system_schema.scylla_keyspaces: empty, so every keyspace uses vnodes
	// (a tablets keyspace would need system.cdc_streams instead).
	`CREATE TABLE IF NOT EXISTS ` + Keyspace + `.scylla_keyspaces (
		keyspace_name text PRIMARY KEY, initial_tablets int)`,
	// system.cdc_local: only pre-4.4 clusters consult it.
	`CREATE TABLE IF NOT EXISTS ` + Keyspace + `.cdc_local (key text PRIMARY KEY, streams_timestamp timestamp)`,
	// The extensions column of system_schema.tables, where ScyllaDB keeps a
	// table's cdc options.
	`CREATE TABLE IF NOT EXISTS ` + Keyspace + `.tables (
		keyspace_name text, table_name text, extensions frozen<map<text, blob>>,
		PRIMARY KEY (keyspace_name, table_name))`,
}

// Topology shapes a generation's streams: ScyllaDB has one stream per
// vnode and shard.
type Topology struct {
	Vnodes, Shards int
}

// DefaultTopology is a small cluster's worth of streams.
var DefaultTopology = Topology{Vnodes: 4, Shards: 2}

// Bootstrap creates the emulation keyspace and, on a cluster that has
// none, a first generation dated an hour back, so tests may write with
// timestamps up to an hour old (ScyllaDB's first generation dates from
// the cluster's creation).
func Bootstrap(ctx context.Context, s *gocql.Session, topo Topology) error {
	for _, st := range schema {
		if err := s.Query(st).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("scyllaemu: bootstrap: %s: %w", strings.Fields(st)[2], err)
		}
	}
	times, err := Generations(ctx, s)
	if err != nil || len(times) > 0 {
		return err
	}
	return NewGeneration(ctx, s, time.Now().Add(-time.Hour), topo)
}

// Generations lists the generations' start times, oldest first.
func Generations(ctx context.Context, s *gocql.Session) ([]time.Time, error) {
	iter := s.Query(`SELECT time FROM ` + Keyspace + `.cdc_generation_timestamps WHERE key = 'timestamps'`).WithContext(ctx).Iter()
	var out []time.Time
	var t time.Time
	for iter.Scan(&t) {
		out = append(out, t)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scyllaemu: list generations: %w", err)
	}
	slices.SortFunc(out, time.Time.Compare)
	return out, nil
}

// NewGeneration publishes a generation of fresh streams starting at at
// (millisecond precision, as ScyllaDB's). Writes stamped at or after it
// go to its streams. Like ScyllaDB, which dates a new generation a little
// into the future so every node knows it before it applies, give at
// some margin: writes already under way keep the streams they had.
func NewGeneration(ctx context.Context, s *gocql.Session, at time.Time, topo Topology) error {
	at = at.Truncate(time.Millisecond)
	if topo.Vnodes < 1 || topo.Shards < 1 || topo.Vnodes > 1<<22 {
		return fmt.Errorf("scyllaemu: topology %+v: need 1..4194304 vnodes and at least 1 shard", topo)
	}
	for v, streams := range generationStreams(topo) {
		if err := s.Query(`INSERT INTO `+Keyspace+`.cdc_streams_descriptions_v2 (time, range_end, streams) VALUES (?, ?, ?)`,
			at, vnodeEnd(v, topo.Vnodes), streams).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("scyllaemu: write generation %s: %w", at, err)
		}
	}
	// Published after its streams: a reader or the trigger that sees the
	// timestamp finds every stream.
	if err := s.Query(`INSERT INTO `+Keyspace+`.cdc_generation_timestamps (key, time) VALUES ('timestamps', ?)`, at).
		WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: publish generation %s: %w", at, err)
	}
	return nil
}

// ringStart is the ring's first token, -2^63, as unsigned bits.
const ringStart = uint64(1) << 63

// vnodeEnd is the last token of vnode v of n equal vnodes on the
// Murmur3 ring [-2^63, 2^63-1].
func vnodeEnd(v, n int) int64 {
	if v == n-1 {
		return math.MaxInt64
	}
	width := math.MaxUint64/uint64(n) + 1
	return int64(ringStart + uint64(v+1)*width - 1)
}

// generationStreams makes each vnode's streams. A stream id is ScyllaDB's
// vnode-grouped layout: the token the stream owns up to (8 bytes), then
// random bits, the vnode index and version 1 in the low 26 bits. Each
// vnode's range is split in equal parts, one per shard: the trigger puts
// a partition in the stream whose part holds its token.
func generationStreams(topo Topology) [][][]byte {
	out := make([][][]byte, topo.Vnodes)
	start := ringStart
	for v := range topo.Vnodes {
		end := uint64(vnodeEnd(v, topo.Vnodes))
		part := (end - start) / uint64(topo.Shards)
		for sh := range topo.Shards {
			token := start + uint64(sh+1)*part
			if sh == topo.Shards-1 {
				token = end
			}
			id := make([]byte, 16)
			binary.BigEndian.PutUint64(id, token)
			var rnd [8]byte
			rand.Read(rnd[:])
			low := binary.BigEndian.Uint64(rnd[:])&^(1<<26-1) | uint64(v)<<4 | 1
			binary.BigEndian.PutUint64(id[8:], low)
			out[v] = append(out[v], id)
		}
		start = end + 1
	}
	return out
}

// column is a base table column as system_schema.columns lists it.
type column struct {
	name, kind, typ string
	position        int
}

// logColumns are the log table's columns for base's, in ScyllaDB's
// layout: key columns as they are; each other column with its value
// (collections frozen, a list as the map from its timeuuid keys) and
// cdc$deleted_<col>; non-frozen collections also with
// cdc$deleted_elements_<col>.
func logColumns(base []column) [][2]string {
	var out [][2]string
	for _, c := range base {
		if c.kind == "partition_key" || c.kind == "clustering" {
			out = append(out, [2]string{c.name, c.typ})
			continue
		}
		value, deleted := c.typ, ""
		switch kind, args := splitType(c.typ); kind {
		case "map":
			value, deleted = "frozen<"+c.typ+">", "frozen<set<"+args[0]+">>"
		case "set":
			value, deleted = "frozen<"+c.typ+">", "frozen<"+c.typ+">"
		case "list":
			value, deleted = "frozen<map<timeuuid, "+args[0]+">>", "frozen<set<timeuuid>>"
		}
		out = append(out, [2]string{c.name, value}, [2]string{"cdc$deleted_" + c.name, "boolean"})
		if deleted != "" {
			out = append(out, [2]string{"cdc$deleted_elements_" + c.name, deleted})
		}
	}
	return out
}

// splitType splits "map<text, frozen<list<int>>>" into "map" and its
// top-level arguments; a type without arguments returns itself.
func splitType(t string) (string, []string) {
	open := strings.IndexByte(t, '<')
	if open < 0 || !strings.HasSuffix(t, ">") {
		return t, nil
	}
	var args []string
	depth, from := 0, open+1
	for i := open + 1; i < len(t)-1; i++ {
		switch t[i] {
		case '<':
			depth++
		case '>':
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(t[from:i]))
				from = i + 1
			}
		}
	}
	return t[:open], append(args, strings.TrimSpace(t[from:len(t)-1]))
}

func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

func tableColumns(ctx context.Context, s *gocql.Session, keyspace, table string) ([]column, error) {
	iter := s.Query(`SELECT column_name, kind, type, position FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?`,
		keyspace, table).WithContext(ctx).Iter()
	var out []column
	var c column
	for iter.Scan(&c.name, &c.kind, &c.typ, &c.position) {
		out = append(out, c)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scyllaemu: columns of %s.%s: %w", keyspace, table, err)
	}
	// Key columns first, in key order: the log's primary key lists them so.
	rank := map[string]int{"partition_key": 0, "clustering": 1, "static": 2, "regular": 3}
	slices.SortStableFunc(out, func(a, b column) int {
		if a.kind != b.kind {
			return rank[a.kind] - rank[b.kind]
		}
		if a.kind == "partition_key" || a.kind == "clustering" {
			return a.position - b.position
		}
		return strings.Compare(a.name, b.name)
	})
	return out, nil
}

// enableCDC gives keyspace.table its log table, the trigger that fills it
// and its cdc options where the reader looks for them.
func enableCDC(ctx context.Context, s *gocql.Session, keyspace, table string, ttl time.Duration) error {
	base, err := tableColumns(ctx, s, keyspace, table)
	if err != nil {
		return err
	}
	if len(base) == 0 {
		return fmt.Errorf("scyllaemu: %s.%s has no columns in system_schema", keyspace, table)
	}
	defs := []string{`"cdc$stream_id" blob`, `"cdc$time" timeuuid`, `"cdc$batch_seq_no" int`,
		`"cdc$operation" tinyint`, `"cdc$ttl" bigint`, `"cdc$end_of_batch" boolean`}
	for _, c := range logColumns(base) {
		defs = append(defs, quote(c[0])+" "+c[1])
	}
	logTable := quote(keyspace) + "." + quote(table+LogSuffix)
	stmts := []string{
		// The log's TTL is the table default: the trigger stamps every log
		// row with it, as ScyllaDB stamps log rows with the cdc 'ttl'.
		`CREATE TABLE IF NOT EXISTS ` + logTable + ` (` + strings.Join(defs, ", ") +
			`, PRIMARY KEY ("cdc$stream_id", "cdc$time", "cdc$batch_seq_no")) WITH default_time_to_live = ` +
			strconv.FormatInt(int64(ttl/time.Second), 10) + ` AND comment = 'CDC log emulated by scyllaemu'`,
		`CREATE TRIGGER IF NOT EXISTS scylla_cdc_log ON ` + quote(keyspace) + "." + quote(table) + ` USING '` + TriggerClass + `'`,
	}
	for _, st := range stmts {
		if err := s.Query(st).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("scyllaemu: enable CDC on %s.%s: %w", keyspace, table, err)
		}
	}
	ext := map[string][]byte{"cdc": extension(map[string]string{
		"enabled": "true", "preimage": "false", "postimage": "false", "delta": "full",
		"ttl": strconv.FormatInt(int64(ttl/time.Second), 10)})}
	if err := s.Query(`INSERT INTO `+Keyspace+`.tables (keyspace_name, table_name, extensions) VALUES (?, ?, ?)`,
		keyspace, table, ext).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: record cdc options of %s.%s: %w", keyspace, table, err)
	}
	return nil
}

// extension encodes cdc options as ScyllaDB stores them in
// system_schema.tables' extensions: a map of strings, lengths and count
// as little-endian int32.
func extension(opts map[string]string) []byte {
	le := func(b []byte, n int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(n)) }
	b := le(nil, len(opts))
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		b = append(le(b, len(k)), k...)
		b = append(le(b, len(opts[k])), opts[k]...)
	}
	return b
}

// syncLogColumns adds to the log table the base table's columns it lacks
// (ScyllaDB alters the log with its base table).
func syncLogColumns(ctx context.Context, s *gocql.Session, keyspace, table string) error {
	have, err := tableColumns(ctx, s, keyspace, table+LogSuffix)
	if err != nil || len(have) == 0 {
		return err // no log: not a CDC table
	}
	base, err := tableColumns(ctx, s, keyspace, table)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, c := range have {
		known[c.name] = true
	}
	var add []string
	for _, c := range logColumns(base) {
		if !known[c[0]] {
			add = append(add, quote(c[0])+" "+c[1])
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := s.Query(`ALTER TABLE ` + quote(keyspace) + "." + quote(table+LogSuffix) + ` ADD (` + strings.Join(add, ", ") + `)`).
		WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: alter the log of %s.%s: %w", keyspace, table, err)
	}
	return nil
}

// dropLogTable drops a dropped table's log and options.
func dropLogTable(ctx context.Context, s *gocql.Session, keyspace, table string) error {
	if err := s.Query(`DROP TABLE IF EXISTS ` + quote(keyspace) + "." + quote(table+LogSuffix)).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: drop the log of %s.%s: %w", keyspace, table, err)
	}
	if err := s.Query(`DELETE FROM `+Keyspace+`.tables WHERE keyspace_name = ? AND table_name = ?`, keyspace, table).
		WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: forget the cdc options of %s.%s: %w", keyspace, table, err)
	}
	return nil
}

// forgetKeyspace drops a dropped keyspace's cdc options (its log tables
// went with it).
func forgetKeyspace(ctx context.Context, s *gocql.Session, keyspace string) error {
	if err := s.Query(`DELETE FROM `+Keyspace+`.tables WHERE keyspace_name = ?`, keyspace).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scyllaemu: forget the cdc options of keyspace %s: %w", keyspace, err)
	}
	return nil
}

// Emulated reports whether the cluster s talks to is this emulation
// rather than a ScyllaDB cluster.
func Emulated(ctx context.Context, s *gocql.Session) (bool, error) {
	var n int
	if err := s.Query(`SELECT count(*) FROM system_schema.keyspaces WHERE keyspace_name = ?`, Keyspace).WithContext(ctx).Scan(&n); err != nil {
		return false, fmt.Errorf("scyllaemu: look for the emulation keyspace: %w", err)
	}
	return n > 0, nil
}
