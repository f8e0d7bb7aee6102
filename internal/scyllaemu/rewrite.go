package scyllaemu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Keyspace holds what Apache Cassandra lacks of ScyllaDB's system tables:
// CDC generations and streams, the tablets check, CDC table options.
// Cassandra refuses tables in system_distributed and system_schema, so
// clients' statements naming them are rewritten to this keyspace.
const Keyspace = "scyllaemu"

// DefaultLogTTL is ScyllaDB's default CDC log TTL, used when a table's
// cdc options name none.
const DefaultLogTTL = 24 * time.Hour

// actionKind is what the proxy does once Cassandra accepted a statement,
// before the client hears the answer.
type actionKind int

const (
	noAction     actionKind = iota
	createLog               // CREATE TABLE ... WITH cdc: add the log table, trigger and options
	syncLog                 // ALTER TABLE: give the log table the base table's new columns
	dropLog                 // DROP TABLE: drop the log table too, as ScyllaDB does
	dropKeyspace            // DROP KEYSPACE: forget its tables' cdc options
)

type action struct {
	kind            actionKind
	keyspace, table string
	ttl             time.Duration
}

// plan is what becomes of one client statement.
type plan struct {
	stmt   string // sent to Cassandra
	refuse string // when set, the client gets this error and Cassandra nothing
	after  action
}

var (
	// Scylla-only tables, with the emulation's equivalents. The
	// extensions query is the reader's TTL lookup; the driver's own
	// metadata queries on system_schema.tables (SELECT *) stay.
	tableRenames = []struct {
		re *regexp.Regexp
		to string
	}{
		{regexp.MustCompile(`(?i)\bsystem_distributed\.cdc_`), Keyspace + ".cdc_"},
		{regexp.MustCompile(`(?i)\bsystem_schema\.scylla_keyspaces\b`), Keyspace + ".scylla_keyspaces"},
		{regexp.MustCompile(`(?i)\bsystem\.cdc_local\b`), Keyspace + ".cdc_local"},
		{regexp.MustCompile(`(?i)^(\s*SELECT\s+extensions\s+FROM\s+)system_schema\.tables\b`), "${1}" + Keyspace + ".tables"},
	}
	// BYPASS CACHE is ScyllaDB's hint to leave the row cache alone; it is a
	// syntax error in Cassandra, which has no row cache to bypass by default.
	bypassCache = regexp.MustCompile(`(?i)\s+BYPASS\s+CACHE\s*;?\s*$`)

	tableName   = `("?)(\w+)("?)\.("?)(\w+)("?)`
	createTable = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:COLUMNFAMILY|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?` + tableName + `\s*\(`)
	alterTable  = regexp.MustCompile(`(?is)^\s*ALTER\s+(?:COLUMNFAMILY|TABLE)\s+(?:IF\s+EXISTS\s+)?` + tableName + `\s`)
	dropTable   = regexp.MustCompile(`(?is)^\s*DROP\s+(?:COLUMNFAMILY|TABLE)\s+(?:IF\s+EXISTS\s+)?` + tableName + `\s*;?\s*$`)
	dropKS      = regexp.MustCompile(`(?is)^\s*DROP\s+KEYSPACE\s+(?:IF\s+EXISTS\s+)?("?)(\w+)("?)\s*;?\s*$`)
	anyCreate   = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:COLUMNFAMILY|TABLE)\s`)
	anyAlter    = regexp.MustCompile(`(?is)^\s*ALTER\s+(?:COLUMNFAMILY|TABLE)\s`)
	cdcOption   = regexp.MustCompile(`(?is)\bcdc\s*=\s*\{([^}]*)\}`)
	withBefore  = regexp.MustCompile(`(?is)\s*\bWITH\s*$`)
	andBefore   = regexp.MustCompile(`(?is)\s+AND\s*$`)
	andAfter    = regexp.MustCompile(`(?is)^\s*AND\s+`)
	mapEntry    = regexp.MustCompile(`'([^']*)'\s*:\s*(?:'([^']*)'|([\w.+-]+))`)
)

// rewrite turns a client's statement into what Cassandra can run.
func rewrite(stmt string) plan {
	p := plan{stmt: stmt}
	for _, r := range tableRenames {
		p.stmt = r.re.ReplaceAllString(p.stmt, r.to)
	}
	p.stmt = bypassCache.ReplaceAllString(p.stmt, "")

	switch {
	case anyCreate.MatchString(p.stmt):
		m := cdcOption.FindStringSubmatchIndex(p.stmt)
		if m == nil {
			return p
		}
		name := createTable.FindStringSubmatch(p.stmt)
		if name == nil {
			p.refuse = "scyllaemu: name the keyspace of a table with cdc options (keyspace.table)"
			return p
		}
		ks, table := names(name)
		opts := parseMap(p.stmt[m[2]:m[3]])
		p.stmt = withoutOption(p.stmt, m[0], m[1])
		if strings.EqualFold(opts["enabled"], "false") {
			return p
		}
		for _, image := range []string{"preimage", "postimage"} {
			if v := opts[image]; v != "" && !strings.EqualFold(v, "false") {
				p.refuse = fmt.Sprintf("scyllaemu: cdc %s is not emulated", image)
				return p
			}
		}
		ttl := DefaultLogTTL
		if v, ok := opts["ttl"]; ok {
			secs, err := strconv.ParseInt(v, 10, 64)
			if err != nil || secs < 0 {
				p.refuse = fmt.Sprintf("scyllaemu: cdc ttl %q is not a number of seconds", v)
				return p
			}
			ttl = time.Duration(secs) * time.Second
		}
		p.after = action{kind: createLog, keyspace: ks, table: table, ttl: ttl}
	case anyAlter.MatchString(p.stmt):
		if cdcOption.MatchString(p.stmt) {
			p.refuse = "scyllaemu: cdc options are emulated only in CREATE TABLE"
			return p
		}
		if name := alterTable.FindStringSubmatch(p.stmt); name != nil {
			ks, table := names(name)
			p.after = action{kind: syncLog, keyspace: ks, table: table}
		}
	case dropTable.MatchString(p.stmt):
		ks, table := names(dropTable.FindStringSubmatch(p.stmt))
		p.after = action{kind: dropLog, keyspace: ks, table: table}
	case dropKS.MatchString(p.stmt):
		m := dropKS.FindStringSubmatch(p.stmt)
		ks, _ := names(append(m, m[1:4]...))
		p.after = action{kind: dropKeyspace, keyspace: ks}
	}
	return p
}

// names reads keyspace and table from a tableName match: quoted names keep
// their case, unquoted ones are lower-cased, as CQL does.
func names(m []string) (keyspace, table string) {
	name := func(open, n, close string) string {
		if open == `"` && close == `"` {
			return n
		}
		return strings.ToLower(n)
	}
	return name(m[1], m[2], m[3]), name(m[4], m[5], m[6])
}

// withoutOption removes stmt[start:end], a table option, with the WITH or
// AND that joined it to the others.
func withoutOption(stmt string, start, end int) string {
	before, after := stmt[:start], stmt[end:]
	switch {
	case andBefore.MatchString(before):
		before = andBefore.ReplaceAllString(before, "")
	case withBefore.MatchString(before) && andAfter.MatchString(after):
		after = andAfter.ReplaceAllString(after, "")
	case withBefore.MatchString(before):
		before = withBefore.ReplaceAllString(before, "")
	}
	return before + after
}

func parseMap(s string) map[string]string {
	out := map[string]string{}
	for _, m := range mapEntry.FindAllStringSubmatch(s, -1) {
		v := m[2]
		if v == "" {
			v = m[3]
		}
		out[strings.ToLower(m[1])] = v
	}
	return out
}

// renameValue rewrites a bound value naming system_distributed: the
// driver looks tables up in system_schema by a bound keyspace name, and
// the reader checks that ScyllaDB's generation tables exist that way.
func renameValue(v []byte) []byte {
	if string(v) == "system_distributed" {
		return []byte(Keyspace)
	}
	return v
}
