package scylla

import (
	"testing"
	"time"

	"github.com/gocql/gocql"
)

func TestParseURL(t *testing.T) {
	st, err := ParseURL("scylla://a:9042,b:9042/shop?consistency=quorum&rf=1&cdc_ttl=2h&profile=low-latency")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Config.Hosts) != 2 || st.Config.Hosts[1] != "b:9042" || st.Config.Keyspace != "shop" ||
		st.Config.Consistency != gocql.Quorum || st.Schema.CDCTTL != 2*time.Hour || st.CDC.LogTTL != 2*time.Hour ||
		st.CDC.ConfidenceWindow != LowLatency().ConfidenceWindow || st.Schema.Replication != "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}" {
		t.Fatalf("parsed %+v", st)
	}
	for _, bad := range []string{
		"postgres://a/shop", "scylla:///shop", "scylla://a/Shop-1", "scylla://a/", "scylla://a/shop?consistency=most",
		"scylla://a/shop?rf=0", "scylla://a/shop?cdc_ttl=1s", "scylla://a/shop?profile=fast", "scylla://a/shop?password=x",
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
