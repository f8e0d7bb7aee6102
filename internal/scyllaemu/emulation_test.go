package scyllaemu

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
)

// These check the emulated CDC log against ScyllaDB's documented layout,
// on the Apache Cassandra node scripts/services.sh starts with the
// trigger loaded (OUTBOX_TEST_CASSANDRA_HOSTS), through a proxy started
// here. They publish no generation: generations are cluster-wide, and a
// switch would disturb other packages' tests reading the same node.

func upstream(t *testing.T) string {
	t.Helper()
	hosts := os.Getenv("OUTBOX_TEST_CASSANDRA_HOSTS")
	if hosts == "" || os.Getenv("OUTBOX_TEST_SCYLLA_HOSTS") == "" {
		if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
			t.Fatal("OUTBOX_TEST_CASSANDRA_HOSTS and OUTBOX_TEST_SCYLLA_HOSTS are required (OUTBOX_REQUIRE_SERVICES=1); run ./scripts/test.sh")
		}
		t.Skip("the emulation's Cassandra is not running: scripts/services.sh starts it (OUTBOX_TEST_CASSANDRA_HOSTS, OUTBOX_TEST_SCYLLA_HOSTS)")
	}
	return strings.Split(hosts, ",")[0]
}

func session(t *testing.T, addr string, opts ...func(*gocql.ClusterConfig)) *gocql.Session {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	c := gocql.NewCluster(host)
	c.Port, _ = strconv.Atoi(port)
	c.Timeout, c.Consistency = 20*time.Second, gocql.One
	for _, o := range opts {
		o(c)
	}
	s, err := c.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// proxy starts a proxy for the test; it returns a session through it and
// one straight to Cassandra.
func proxy(t *testing.T) (client, direct *gocql.Session) {
	t.Helper()
	up := upstream(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(ctx, Config{Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		p.Close()
	})
	return session(t, p.Addr()), session(t, up)
}

type logRow struct {
	stream   []byte
	time     gocql.UUID
	seq      int
	op       int8
	ttl      *int64
	end      bool
	pk       string
	ck       *int
	v        *string
	deletedV *bool
	m        map[string]string
	deletedM *bool
	removedM []string
}

func TestTheTriggerWritesScyllasCDCLog(t *testing.T) {
	client, direct := proxy(t)
	ctx := t.Context()
	ks := fmt.Sprintf("scyllaemu_t%d_%d", time.Now().UnixNano()%1e9, rand.IntN(1000))
	t.Cleanup(func() { client.Query("DROP KEYSPACE IF EXISTS " + ks).Exec() })
	for _, st := range []string{
		`CREATE KEYSPACE ` + ks + ` WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
		`CREATE TABLE ` + ks + `.t (pk text, ck int, v text, m map<text, text>, PRIMARY KEY (pk, ck)) WITH cdc = {'enabled': true, 'ttl': 3600}`,
	} {
		if err := client.Query(st).WithContext(ctx).Exec(); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}

	// The layout the reader expects, and the options it reads the TTL from.
	var types []string
	iter := direct.Query(`SELECT column_name, kind, type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?`, ks, "t"+LogSuffix).Iter()
	var name, kind, typ string
	for iter.Scan(&name, &kind, &typ) {
		types = append(types, name+" "+kind+" "+typ)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(types)
	want := []string{"cdc$batch_seq_no clustering int", "cdc$deleted_elements_m regular frozen<set<text>>", "cdc$deleted_m regular boolean",
		"cdc$deleted_v regular boolean", "cdc$end_of_batch regular boolean", "cdc$operation regular tinyint", "cdc$stream_id partition_key blob",
		"cdc$time clustering timeuuid", "cdc$ttl regular bigint", "ck regular int", "m regular frozen<map<text, text>>", "pk regular text", "v regular text"}
	if !slices.Equal(types, want) {
		t.Fatalf("log table columns\n got %v\nwant %v", types, want)
	}
	var ext map[string][]byte
	if err := client.Query(`SELECT extensions FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?`, ks, "t").Scan(&ext); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ext["cdc"]), "ttl\x04\x00\x00\x003600") {
		t.Fatalf("cdc options as the reader reads them: %q", ext["cdc"])
	}
	// The reader's existence checks go through the driver's metadata,
	// which looks system_distributed up by a bound name.
	if _, err := client.TableMetadata("system_distributed", "cdc_streams_descriptions_v2"); err != nil {
		t.Fatalf("ScyllaDB's generation table through the driver's metadata: %v", err)
	}
	if err := client.Query(`SELECT * FROM system_schema.scylla_keyspaces WHERE keyspace_name = ?`, ks).MapScan(map[string]any{}); err != gocql.ErrNotFound {
		t.Fatalf("tablets check: %v, want no row (vnodes)", err)
	}

	// One LOGGED BATCH: partition a gets an insert (ck 2, written first),
	// an update of ck 1 setting v to null and changing the map, with a
	// TTL; partition b an insert. All at one client timestamp.
	ts := time.Now().Add(-time.Second).UnixMicro()
	b := client.NewBatch(gocql.LoggedBatch).WithTimestamp(ts)
	b.Query(`INSERT INTO `+ks+`.t (pk, ck, v, m) VALUES (?, ?, ?, ?)`, "a", 2, "x", map[string]string{"k": "v"})
	b.Query(`UPDATE `+ks+`.t USING TTL 100 SET v = null, m['k2'] = 'v2', m = m - {'gone'} WHERE pk = ? AND ck = ?`, "a", 1)
	b.Query(`INSERT INTO `+ks+`.t (pk, ck, v) VALUES (?, ?, ?)`, "b", 1, "y")
	if err := client.ExecuteBatch(b); err != nil {
		t.Fatal(err)
	}
	if err := client.Query(`DELETE FROM `+ks+`.t WHERE pk = ? AND ck = ?`, "b", 1).WithTimestamp(ts + 1).Exec(); err != nil {
		t.Fatal(err)
	}
	if err := client.Query(`DELETE FROM `+ks+`.t WHERE pk = ?`, "a").WithTimestamp(ts + 2).Exec(); err != nil {
		t.Fatal(err)
	}
	err := client.Query(`DELETE FROM `+ks+`.t WHERE pk = ? AND ck > ?`, "a", 5).Exec()
	if err == nil || !strings.Contains(err.Error(), "range deletions are not emulated") {
		t.Fatalf("a range deletion: %v, want it refused", err)
	}

	// Read as the reader does, BYPASS CACHE and all, through the proxy.
	rows := map[string][]logRow{}
	iter = client.Query(`SELECT "cdc$stream_id", "cdc$time", "cdc$batch_seq_no", "cdc$operation", "cdc$ttl", "cdc$end_of_batch",
		pk, ck, v, "cdc$deleted_v", m, "cdc$deleted_m", "cdc$deleted_elements_m" FROM ` + ks + `.t_scylla_cdc_log BYPASS CACHE`).Iter()
	for {
		var r logRow
		if !iter.Scan(&r.stream, &r.time, &r.seq, &r.op, &r.ttl, &r.end, &r.pk, &r.ck, &r.v, &r.deletedV, &r.m, &r.deletedM, &r.removedM) {
			break
		}
		rows[r.pk] = append(rows[r.pk], r)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	a, bRows := rows["a"], rows["b"]
	if len(a) != 3 || len(bRows) != 2 {
		t.Fatalf("log rows: a %d, b %d; want 3 (two of the batch, the partition delete) and 2 (insert, row delete)", len(a), len(bRows))
	}
	for _, r := range append(slices.Clone(a), bRows...) {
		if time := r.time.Time().UnixMicro(); time != ts && time != ts+1 && time != ts+2 {
			t.Errorf("cdc$time %v is not a write timestamp", r.time.Time())
		}
		if !slices.Equal(r.stream, owningStream(t, direct, ks, r.pk, r.time.Time())) {
			t.Errorf("partition %s logged in stream %x, not the one owning its token", r.pk, r.stream)
		}
	}
	// Partition a's batch: one change, rows in clustering order.
	first, second := a[0], a[1]
	if first.time != second.time || first.seq != 0 || second.seq != 1 || first.end || !second.end {
		t.Fatalf("a's batch is not one change numbered in order: %+v %+v", first, second)
	}
	if *first.ck != 1 || first.op != 1 || first.v != nil || first.deletedV == nil || !*first.deletedV ||
		first.m["k2"] != "v2" || !slices.Equal(first.removedM, []string{"gone"}) || first.ttl == nil || *first.ttl != 100 {
		t.Errorf("the update (ck 1): %+v", first)
	}
	if *second.ck != 2 || second.op != 2 || *second.v != "x" || second.m["k"] != "v" || second.deletedM == nil || !*second.deletedM || second.ttl != nil {
		t.Errorf("the insert (ck 2): %+v", second)
	}
	if a[2].op != 4 || a[2].time.Time().UnixMicro() != ts+2 || a[2].ck != nil || !a[2].end {
		t.Errorf("the partition delete: %+v", a[2])
	}
	if bRows[0].op != 2 || !bRows[0].end || bRows[1].op != 3 || *bRows[1].ck != 1 || bRows[0].time == bRows[1].time {
		t.Errorf("b's insert and row delete: %+v", bRows)
	}
	// Log rows expire with the cdc 'ttl'.
	var ttl int
	if err := direct.Query(`SELECT TTL("cdc$operation") FROM `+ks+`.t_scylla_cdc_log WHERE "cdc$stream_id" = ? LIMIT 1`, a[0].stream).Scan(&ttl); err != nil || ttl < 3500 || ttl > 3600 {
		t.Errorf("log row TTL %d (%v), want about 3600", ttl, err)
	}

	// Dropping the table drops its log, as in ScyllaDB.
	if err := client.Query(`DROP TABLE ` + ks + `.t`).Exec(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := direct.Query(`SELECT count(*) FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?`, ks, "t"+LogSuffix).Scan(&n); err != nil || n != 0 {
		t.Fatalf("log table left after DROP TABLE: %d %v", n, err)
	}
}

// owningStream is the stream ScyllaDB's rule gives partition pk at time
// at: in the generation in force then, the stream whose token range
// holds the partition's token.
func owningStream(t *testing.T, s *gocql.Session, ks, pk string, at time.Time) []byte {
	t.Helper()
	// The base rows may be deleted by now: hash the key in a side table
	// with the same partition key type.
	if err := s.Query(`CREATE TABLE IF NOT EXISTS ` + ks + `.tokens (pk text PRIMARY KEY)`).Exec(); err != nil {
		t.Fatal(err)
	}
	if err := s.Query(`INSERT INTO `+ks+`.tokens (pk) VALUES (?)`, pk).Exec(); err != nil {
		t.Fatal(err)
	}
	var token int64
	if err := s.Query(`SELECT token(pk) FROM `+ks+`.tokens WHERE pk = ?`, pk).Scan(&token); err != nil {
		t.Fatal(err)
	}
	gens, err := Generations(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	var gen time.Time
	for _, g := range gens {
		if !g.After(at) {
			gen = g
		}
	}
	iter := s.Query(`SELECT streams FROM `+Keyspace+`.cdc_streams_descriptions_v2 WHERE time = ?`, gen).Iter()
	var all [][]byte
	var streams [][]byte
	for iter.Scan(&streams) {
		all = append(all, streams...)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	tokenOf := func(id []byte) int64 { return int64(binary.BigEndian.Uint64(id)) }
	slices.SortFunc(all, func(x, y []byte) int { return cmp.Compare(tokenOf(x), tokenOf(y)) })
	for _, id := range all {
		if tokenOf(id) >= token {
			return id
		}
	}
	return all[0]
}
