package scyllaemu

import (
	"encoding/binary"
	"math"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		after          action
		refuse         string
	}{
		{name: "the reader's log query loses BYPASS CACHE",
			in:   `SELECT * FROM ks.t_scylla_cdc_log WHERE "cdc$stream_id" IN (?, ?) AND "cdc$time" > ? AND "cdc$time" <= ? BYPASS CACHE`,
			want: `SELECT * FROM ks.t_scylla_cdc_log WHERE "cdc$stream_id" IN (?, ?) AND "cdc$time" > ? AND "cdc$time" <= ?`},
		{name: "PER PARTITION LIMIT stays", in: `SELECT "cdc$time" FROM ks.t_scylla_cdc_log PER PARTITION LIMIT 1 bypass  cache;`,
			want: `SELECT "cdc$time" FROM ks.t_scylla_cdc_log PER PARTITION LIMIT 1`},
		{name: "generation timestamps", in: `SELECT time FROM system_distributed.cdc_generation_timestamps WHERE key = 'timestamps'`,
			want: `SELECT time FROM scyllaemu.cdc_generation_timestamps WHERE key = 'timestamps'`},
		{name: "generation streams", in: `SELECT streams FROM system_distributed.cdc_streams_descriptions_v2 WHERE time = ?`,
			want: `SELECT streams FROM scyllaemu.cdc_streams_descriptions_v2 WHERE time = ?`},
		{name: "tablets check", in: `SELECT * FROM system_schema.scylla_keyspaces WHERE keyspace_name = ?`,
			want: `SELECT * FROM scyllaemu.scylla_keyspaces WHERE keyspace_name = ?`},
		{name: "pre-4.4 migration marker", in: `SELECT streams_timestamp FROM system.cdc_local WHERE key = 'rewritten'`,
			want: `SELECT streams_timestamp FROM scyllaemu.cdc_local WHERE key = 'rewritten'`},
		{name: "the reader's TTL lookup", in: `SELECT extensions FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?`,
			want: `SELECT extensions FROM scyllaemu.tables WHERE keyspace_name = ? AND table_name = ?`},
		{name: "the driver's metadata query stays", in: `SELECT * FROM system_schema.tables WHERE keyspace_name = ?`,
			want: `SELECT * FROM system_schema.tables WHERE keyspace_name = ?`},
		{name: "text that merely mentions cdc stays", in: `INSERT INTO ks.notes (k, v) VALUES ('a', 'cdc = {x} BYPASS CACHE here')`,
			want: `INSERT INTO ks.notes (k, v) VALUES ('a', 'cdc = {x} BYPASS CACHE here')`},
		{name: "CREATE TABLE WITH cdc only",
			in:    `CREATE TABLE IF NOT EXISTS shop.outbox_messages (a text PRIMARY KEY) WITH cdc = {'enabled': true, 'preimage': false, 'postimage': false, 'ttl': 600}`,
			want:  `CREATE TABLE IF NOT EXISTS shop.outbox_messages (a text PRIMARY KEY)`,
			after: action{kind: createLog, keyspace: "shop", table: "outbox_messages", ttl: 10 * time.Minute}},
		{name: "cdc first of several options",
			in:    `CREATE TABLE "Shop"."Outbox" (a text PRIMARY KEY) WITH cdc = {'enabled': 'true'} AND comment = 'x'`,
			want:  `CREATE TABLE "Shop"."Outbox" (a text PRIMARY KEY) WITH comment = 'x'`,
			after: action{kind: createLog, keyspace: "Shop", table: "Outbox", ttl: DefaultLogTTL}},
		{name: "cdc after another option",
			in:    "CREATE TABLE Shop.T (a text PRIMARY KEY) WITH comment = 'x'\n\tAND cdc = {'enabled': true}",
			want:  `CREATE TABLE Shop.T (a text PRIMARY KEY) WITH comment = 'x'`,
			after: action{kind: createLog, keyspace: "shop", table: "t", ttl: DefaultLogTTL}},
		{name: "cdc disabled", in: `CREATE TABLE ks.t (a text PRIMARY KEY) WITH cdc = {'enabled': false}`,
			want: `CREATE TABLE ks.t (a text PRIMARY KEY)`},
		{name: "pre-images are not emulated", in: `CREATE TABLE ks.t (a text PRIMARY KEY) WITH cdc = {'enabled': true, 'preimage': true}`,
			refuse: "preimage is not emulated"},
		{name: "an unqualified CDC table", in: `CREATE TABLE IF NOT EXISTS t (a text PRIMARY KEY) WITH cdc = {'enabled': true}`,
			refuse: "name the keyspace"},
		{name: "ALTER with cdc", in: `ALTER TABLE ks.t WITH cdc = {'enabled': true}`, refuse: "only in CREATE TABLE"},
		{name: "ALTER ADD keeps the log in step", in: `ALTER TABLE ks.t ADD x int`, want: `ALTER TABLE ks.t ADD x int`,
			after: action{kind: syncLog, keyspace: "ks", table: "t"}},
		{name: "DROP TABLE drops the log", in: `DROP TABLE IF EXISTS ks.t`, want: `DROP TABLE IF EXISTS ks.t`,
			after: action{kind: dropLog, keyspace: "ks", table: "t"}},
		{name: "DROP KEYSPACE forgets its options", in: `DROP KEYSPACE IF EXISTS outbox_it_1`, want: `DROP KEYSPACE IF EXISTS outbox_it_1`,
			after: action{kind: dropKeyspace, keyspace: "outbox_it_1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rewrite(tc.in)
			if tc.refuse != "" {
				if !strings.Contains(p.refuse, tc.refuse) {
					t.Fatalf("refusal %q, want one containing %q", p.refuse, tc.refuse)
				}
				return
			}
			if p.refuse != "" {
				t.Fatalf("refused: %s", p.refuse)
			}
			if p.stmt != tc.want || p.after != tc.after {
				t.Fatalf("rewrote\n %s\nto\n %s (then %+v)\nwant\n %s (then %+v)", tc.in, p.stmt, p.after, tc.want, tc.after)
			}
		})
	}
}

// Frames are rewritten field by field: statements, bound values and
// batch members, with every other byte kept and lengths recomputed.
func TestFrameRewriting(t *testing.T) {
	var w writer
	w.longString(`SELECT * FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ? BYPASS CACHE`)
	w.short(0x0006) // LOCAL_QUORUM
	w.byte(qpValues | 0x04)
	w.short(3)
	w.value([]byte("system_distributed"), 18)
	w.value([]byte("cdc_streams_descriptions_v2"), 27)
	w.value(nil, -1)
	w.int(5000) // page size
	query := frame{header: header{version: 4, stream: 7, opcode: opQuery}, body: w.b}

	out, refuse, after, err := rewriteStatementFrame(query)
	if err != nil || refuse != "" || after.kind != noAction {
		t.Fatalf("rewrite: %v %q %+v", err, refuse, after)
	}
	r := reader{b: out.body}
	if got := r.longString(); got != `SELECT * FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?` {
		t.Fatalf("statement %q", got)
	}
	if cl, flags, n := r.short(), r.byte(), r.short(); cl != 6 || flags != qpValues|0x04 || n != 3 {
		t.Fatalf("parameters %d %x %d", cl, flags, n)
	}
	for _, want := range []string{Keyspace, "cdc_streams_descriptions_v2"} {
		if v, _ := r.bytes(); string(v) != want {
			t.Fatalf("value %q, want %q", v, want)
		}
	}
	if _, n := r.bytes(); n != -1 {
		t.Fatalf("null value became length %d", n)
	}
	if r.int() != 5000 || len(r.b) != 0 || r.err != nil {
		t.Fatalf("the rest of the parameters was not kept: %v", r.err)
	}
	if len(out.bytes()) != headerSize+len(out.body) || out.stream != 7 {
		t.Fatal("header not rebuilt")
	}

	var b writer
	b.byte(0) // LOGGED
	b.short(2)
	b.byte(0)
	b.longString(`INSERT INTO ks.t (a) VALUES (?)`)
	b.short(1)
	b.value([]byte("x"), 1)
	b.byte(1)
	b.shortBytes([]byte{0xca, 0xfe})
	b.short(0)
	b.short(0x000A) // consistency
	b.byte(0)
	out, refuse, err = rewriteBatch(frame{header: header{version: 4, opcode: opBatch}, body: b.b})
	if err != nil || refuse != "" || string(out.body) != string(b.b) {
		t.Fatalf("a batch with nothing to rewrite changed: %v %q", err, refuse)
	}
	if _, _, err := rewriteBatch(frame{header: header{version: 4, opcode: opBatch}, body: b.b[:len(b.b)-5]}); err == nil {
		t.Fatal("a truncated batch was accepted")
	}
}

// A generation's streams cover the ring: sorted by the token each owns
// up to, the last ends the ring, and every id has ScyllaDB's vnode
// layout (version 1, its vnode's index), so the library groups a
// vnode's streams into one reader.
func TestGenerationStreamsCoverTheRing(t *testing.T) {
	topo := Topology{Vnodes: 5, Shards: 3}
	var tokens []int64
	for v, streams := range generationStreams(topo) {
		if len(streams) != topo.Shards {
			t.Fatalf("vnode %d has %d streams", v, len(streams))
		}
		for _, id := range streams {
			low := binary.BigEndian.Uint64(id[8:])
			if len(id) != 16 || low&0xf != 1 || int((low>>4)&(1<<22-1)) != v {
				t.Fatalf("stream %x: not version 1 of vnode %d", id, v)
			}
			tokens = append(tokens, int64(binary.BigEndian.Uint64(id)))
		}
		if last := tokens[len(tokens)-1]; last != vnodeEnd(v, topo.Vnodes) {
			t.Fatalf("vnode %d's last stream ends at %d, the vnode at %d", v, last, vnodeEnd(v, topo.Vnodes))
		}
	}
	if !slices.IsSorted(tokens) || len(slices.Compact(slices.Clone(tokens))) != len(tokens) {
		t.Fatalf("stream tokens not strictly increasing: %v", tokens)
	}
	if tokens[len(tokens)-1] != math.MaxInt64 || tokens[0] <= math.MinInt64 {
		t.Fatalf("ring not covered: %d .. %d", tokens[0], tokens[len(tokens)-1])
	}
}

func TestLogColumns(t *testing.T) {
	got := logColumns([]column{
		{name: "pk", kind: "partition_key", typ: "text"},
		{name: "ck", kind: "clustering", typ: "bigint"},
		{name: "h", kind: "regular", typ: "map<text, frozen<list<int>>>"},
		{name: "l", kind: "regular", typ: "list<text>"},
		{name: "s", kind: "static", typ: "set<int>"},
		{name: "f", kind: "regular", typ: "frozen<map<text, text>>"},
		{name: "v", kind: "regular", typ: "text"},
	})
	want := [][2]string{{"pk", "text"}, {"ck", "bigint"},
		{"h", "frozen<map<text, frozen<list<int>>>>"}, {"cdc$deleted_h", "boolean"}, {"cdc$deleted_elements_h", "frozen<set<text>>"},
		{"l", "frozen<map<timeuuid, text>>"}, {"cdc$deleted_l", "boolean"}, {"cdc$deleted_elements_l", "frozen<set<timeuuid>>"},
		{"s", "frozen<set<int>>"}, {"cdc$deleted_s", "boolean"}, {"cdc$deleted_elements_s", "frozen<set<int>>"},
		{"f", "frozen<map<text, text>>"}, {"cdc$deleted_f", "boolean"},
		{"v", "text"}, {"cdc$deleted_v", "boolean"}}
	if !slices.Equal(got, want) {
		t.Fatalf("log columns\n got %v\nwant %v", got, want)
	}
}

// The cdc options are stored as ScyllaDB stores them, which the reader
// parses for the log's TTL: little-endian counts and lengths.
func TestExtensionEncoding(t *testing.T) {
	b := extension(map[string]string{"ttl": "600", "enabled": "true"})
	want := []byte{2, 0, 0, 0, 7, 0, 0, 0, 'e', 'n', 'a', 'b', 'l', 'e', 'd', 4, 0, 0, 0, 't', 'r', 'u', 'e', 3, 0, 0, 0, 't', 't', 'l', 3, 0, 0, 0, '6', '0', '0'}
	if string(b) != string(want) {
		t.Fatalf("extension %v, want %v", b, want)
	}
}

// The emulation is test tooling: the binary that serves traffic must not
// link it.
func TestTheServiceBinaryDoesNotLinkTheEmulation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/outbox-dev/outbox/cmd/outbox").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/outbox-dev/outbox/store/scylla\n") {
		t.Fatal("cmd/outbox's dependencies do not list the ScyllaDB store: the check below would prove nothing")
	}
	if strings.Contains(string(out), "internal/scyllaemu") {
		t.Fatal("cmd/outbox links internal/scyllaemu, the test-only ScyllaDB emulation")
	}
}

// Cassandra's warnings on the reader's system.peers count are dropped,
// the rest of the response kept.
func TestWithoutWarnings(t *testing.T) {
	var w writer
	w.raw(make([]byte, 16)) // tracing id
	w.short(1)
	w.string("Aggregation query used without partition key")
	w.int(0x0002) // Rows
	w.raw([]byte{1, 2, 3})
	f := withoutWarnings(frame{header: header{version: 0x84, flags: flagTracing | flagWarning, opcode: opResult}, body: w.b})
	if f.flags != flagTracing || len(f.body) != 16+4+3 || resultKind(f) != 0x0002 {
		t.Fatalf("flags %x, body %v", f.flags, f.body)
	}
}
