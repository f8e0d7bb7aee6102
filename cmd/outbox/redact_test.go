package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
)

const storeSecret = "S3cret-store-pw"

func TestRedactURLHidesEveryPassword(t *testing.T) {
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"postgres", "postgres://app:" + storeSecret + "@db:5432/shop?sslmode=verify-full", "postgres://app:xxxxx@db:5432/shop?sslmode=verify-full"},
		{"postgres, several hosts", "postgres://app:" + storeSecret + "@db1:5432,db2/shop", "postgres://app:xxxxx@db1:5432,db2/shop"},
		{"postgres, a bad escape", "postgres://app:" + storeSecret + "%zz@db/shop", "postgres://app:xxxxx@db/shop"},
		{"scylla", "scylla://app:" + storeSecret + "@s1,s2/shop?rf=3", "scylla://app:xxxxx@s1,s2/shop?rf=3"},
		{"scylla, hosts with ports", "scylla://app:" + storeSecret + "@s1:9042,s2/shop", "scylla://app:xxxxx@s1:9042,s2/shop"},
		{"no password", "postgres://app@db/shop", "postgres://app@db/shop"},
		{"sqlite", "sqlite:///var/lib/outbox/orders.db", "sqlite:///var/lib/outbox/orders.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := app.RedactURL(tc.raw)
			if got != tc.want || strings.Contains(got, storeSecret) {
				t.Fatalf("redactURL(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

// withPassword returns dsn with its user's password set to storeSecret
// (the test server trusts local connections, so it is not checked).
func withPassword(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), storeSecret)
	return u.String()
}

// A password in a postgres:// or scylla:// store URL appears in no
// output, error or log of outbox, whether the store answers or not.
func TestStoreURLPasswordsStayOutOfOutputAndLogs(t *testing.T) {
	unreachable := []struct {
		name string
		args []string
	}{
		{"postgres refused", []string{"migrate", "--store", "postgres://app:" + storeSecret + "@127.0.0.1:1/shop"}},
		{"postgres bad escape", []string{"migrate", "--store", "postgres://app:" + storeSecret + "%zz@127.0.0.1:1/shop"}},
		{"scylla refused", []string{"migrate", "--store", "scylla://app:" + storeSecret + "@127.0.0.1:1/shop"}},
		{"scylla bad keyspace", []string{"relay", "--store", "scylla://app:" + storeSecret + "@db/Bad-Name"}},
		{"dlq list, postgres refused", []string{"dlq", "list", "--store", "postgres://app:" + storeSecret + "@127.0.0.1:1/shop"}},
	}
	for _, tc := range unreachable {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, tc.args...)
			if code == 0 || errs == "" {
				t.Fatalf("exit %d with %q: want a failure and its message", code, errs)
			}
			if strings.Contains(out+errs, storeSecret) {
				t.Fatalf("the password appears:\n%s%s", out, errs)
			}
		})
	}

	t.Run("postgres answering", func(t *testing.T) {
		dsn := testenv.PostgresDatabase(t)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		host := u.Host
		// pgx tries the hosts in turn; Go's URL parser rejects this form.
		severalHosts := strings.Replace(withPassword(t, dsn), host, host+",127.0.0.1", 1)
		for _, store := range []string{withPassword(t, dsn), severalHosts} {
			// Polling: no replication slot, whose name is the server's, not the database's.
			code, out, errs := runCLI(t, "migrate", "--source", "poll", "--store", store)
			if code != 0 || !strings.Contains(out, "xxxxx") || strings.Contains(out+errs, storeSecret) {
				t.Fatalf("migrate --store %s: exit %d, want 0 and the URL with its password hidden:\n%s%s",
					app.RedactURL(store), code, out, errs)
			}
		}

		// The relay says what it relays from, and every log line after.
		b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		logs := &testenv.CappedBuffer{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"relay", "--source", "poll", "--store", severalHosts, "--brokers", b.Addrs()[0], "--log-level", "debug"}, logs, logs)
		}()
		testenv.Eventually(t, 20*time.Second, "the relay saying where it relays from", func() bool {
			return strings.Contains(logs.String(), "msg=relaying")
		})
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("relay exited %d", code)
		}
		if strings.Contains(logs.String(), storeSecret) || !strings.Contains(logs.String(), "xxxxx") {
			t.Fatalf("relay logs must show the store URL with its password hidden:\n%s", logs)
		}
	})
}
