package scylla

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
)

func TestParseURL(t *testing.T) {
	st, err := ParseURL("scylla://a:9042,b:9042/shop?consistency=quorum&rf=1&cdc_ttl=2h&profile=low-latency&lease_ttl=5s")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Config.Hosts) != 2 || st.Config.Hosts[1] != "b:9042" || st.Config.Keyspace != "shop" ||
		st.Config.Consistency != gocql.Quorum || st.Schema.CDCTTL != 2*time.Hour || st.CDC.LogTTL != 2*time.Hour ||
		st.CDC.ConfidenceWindow != LowLatency().ConfidenceWindow || st.CDC.LeaseTTL != 5*time.Second || st.Schema.Replication != "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}" {
		t.Fatalf("parsed %+v", st)
	}
	auth, err := ParseURL("scylla://app:topsecret@a/shop?tls=true&server_name=db.internal")
	if err != nil || auth.Config.Username != "app" || auth.Config.Password != "topsecret" || auth.Config.TLS == nil ||
		auth.Config.TLS.ServerName != "db.internal" || auth.Config.TLS.InsecureSkipVerify {
		t.Fatalf("user, password and TLS: %+v %v", auth.Config, err)
	}
	if plain, _ := ParseURL("scylla://a/shop?tls=false"); plain.Config.TLS != nil {
		t.Fatal("tls=false enabled TLS")
	}
	for _, bad := range []string{"ftp://app:topsecret@a/shop", "scylla://app:topsecret@a/shop?rf=0", "scylla://app:topsecret@a/shop?ca_file=/nonexistent",
		"scylla://app:topsecret@a/shop?tls=maybe", "scylla://app:topsecret@a:x:y/shop%zz"} {
		_, err := ParseURL(bad)
		if err == nil || strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: %v (want an error without the password)", bad, err)
		}
	}
	for _, bad := range []string{
		"postgres://a/shop", "scylla:///shop", "scylla://a/Shop-1", "scylla://a/", "scylla://a/shop?consistency=most",
		"scylla://a/shop?rf=0", "scylla://a/shop?cdc_ttl=1s", "scylla://a/shop?profile=fast", "scylla://a/shop?password=x",
		"scylla://a/shop?lease_ttl=1s", "scylla://a/shop?lease_ttl=11m", "scylla://a/shop?lease_ttl=5",
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("scylla://a,b/shop?rf=3")
	f.Fuzz(func(t *testing.T, raw string) {
		st, err := ParseURL(raw)
		if err == nil && (len(st.Config.Hosts) == 0 || !keyspaceName.MatchString(st.Config.Keyspace)) {
			t.Fatalf("accepted %q as %+v", raw, st)
		}
	})
}

func TestParseURLIdempotencyTTL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		query string
		want  time.Duration // 0: refused
	}{
		{"a day", "idempotency_ttl=24h", 24 * time.Hour},
		{"minutes", "idempotency_ttl=90m", 90 * time.Minute},
		{"the shortest", "idempotency_ttl=1m", time.Minute},
		{"seconds", "idempotency_ttl=3601s", 3601 * time.Second},
		{"CQL's longest TTL, 20 years", "idempotency_ttl=175200h", 175200 * time.Hour},
		{"zero", "idempotency_ttl=0s", 0},
		{"negative", "idempotency_ttl=-1h", 0},
		{"not whole seconds", "idempotency_ttl=90500ms", 0},
		{"under a minute", "idempotency_ttl=59s", 0},
		{"past CQL's TTL limit", "idempotency_ttl=175201h", 0},
		{"no unit", "idempotency_ttl=3600", 0},
		{"not a duration", "idempotency_ttl=forever", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseURL("scylla://a/shop?" + tc.query)
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "idempotency_ttl") {
					t.Fatalf("accepted as %s (%v), want an error naming idempotency_ttl", st.Config.IdempotencyTTL, err)
				}
				return
			}
			if err != nil || st.Config.IdempotencyTTL != tc.want {
				t.Fatalf("parsed %s, %v; want %s", st.Config.IdempotencyTTL, err, tc.want)
			}
		})
	}
	if st, err := ParseURL("scylla://a/shop"); err != nil || st.Config.IdempotencyTTL != 0 {
		t.Fatalf("without the option: %s %v, want 0 (Open's default)", st.Config.IdempotencyTTL, err)
	}
	if _, err := Open(Config{Hosts: []string{"a"}, Keyspace: "shop", IdempotencyTTL: 90500 * time.Millisecond}); err == nil ||
		!strings.Contains(err.Error(), "IdempotencyTTL") {
		t.Fatalf("Open with a TTL of 90.5 s: %v, want a validation error", err)
	}
}

// A write acknowledged by fewer replicas than overlap the CDC reader's
// LOCAL_QUORUM read can be missed for good: such levels are refused, and
// ANY (gocql's zero value) is not read as the default.
func TestParseURLRefusesWritesTheReaderMayNotSee(t *testing.T) {
	for _, c := range []string{"any", "one", "two", "three", "local_one", "serial", "local_serial"} {
		_, err := ParseURL("scylla://a/shop?rf=1&consistency=" + c)
		if !errors.Is(err, ErrUnsafeConsistency) {
			t.Errorf("consistency=%s: %v, want ErrUnsafeConsistency", c, err)
		}
	}
	for c, want := range map[string]gocql.Consistency{"local_quorum": gocql.LocalQuorum, "quorum": gocql.Quorum, "each_quorum": gocql.EachQuorum, "all": gocql.All} {
		st, err := ParseURL("scylla://a/shop?local_dc=dc1&consistency=" + c)
		if err != nil || st.Config.Consistency != want || st.Config.LocalDC != "dc1" {
			t.Errorf("consistency=%s: %v, %+v", c, err, st.Config)
		}
	}
}

func TestTopologyChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dcs     []string
		localDC string
		c       gocql.Consistency
		ok      bool
	}{
		{"one data centre", []string{"dc1"}, "", gocql.LocalQuorum, true},
		{"one data centre at quorum", []string{"dc1"}, "", gocql.Quorum, true},
		{"one data centre, pinned", []string{"dc1"}, "dc1", gocql.LocalQuorum, true},
		{"pinned to a data centre that does not exist", []string{"dc1"}, "dc9", gocql.LocalQuorum, false},
		{"two data centres, not pinned", []string{"dc1", "dc2"}, "", gocql.LocalQuorum, false},
		{"two data centres, pinned", []string{"dc1", "dc2"}, "dc2", gocql.LocalQuorum, true},
		{"two data centres, each quorum", []string{"dc1", "dc2"}, "dc1", gocql.EachQuorum, true},
		{"two data centres at a global quorum", []string{"dc1", "dc2"}, "dc1", gocql.Quorum, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTopology(tc.dcs, tc.localDC, tc.c)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrUnsafeConsistency)) {
				t.Fatalf("checkTopology = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParseURLFrom(t *testing.T) {
	for query, want := range map[string]time.Time{
		"":                          {},
		"from=oldest":               {},
		"from=2026-11-30T10:00:00Z": time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC),
		"profile=low-latency&from=2026-11-30T10:00:00.5%2B01:00": time.Date(2026, 11, 30, 9, 0, 0, 5e8, time.UTC),
	} {
		st, err := ParseURL("scylla://a/shop?" + query)
		if err != nil || !st.CDC.From.Equal(want) {
			t.Errorf("%q: from %v (%v), want %v", query, st.CDC.From, err, want)
		}
	}
	for _, bad := range []string{"from=now", "from=yesterday", "from=2026-11-30"} {
		if _, err := ParseURL("scylla://a/shop?" + bad); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}
