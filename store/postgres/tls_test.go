package postgres_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/internal/testcert"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/store/postgres"
)

// The test server accepts this user only over TLS (hostssl, SCRAM) and
// presents a certificate for localhost from a throwaway CA.
func TestVerifyFullTLSAndSecretPasswords(t *testing.T) {
	dsn := testenv.PostgresTLSDSN(t)
	ctx := t.Context()
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("verify-full with the server's CA: %v", err)
	}
	var ssl bool
	if err := s.Pool().QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("connection not encrypted: ssl=%v err=%v", ssl, err)
	}
	s.Close()

	u, _ := url.Parse(dsn)
	password, _ := u.User.Password()
	with := func(change func(u *url.URL, q url.Values)) string {
		c := *u
		q := c.Query()
		change(&c, q)
		c.RawQuery = q.Encode()
		return c.String()
	}
	for _, tc := range []struct {
		name, dsn, because string
	}{
		{"another CA", with(func(_ *url.URL, q url.Values) { q.Set("sslrootcert", testcert.New(t).CAFile) }), "certificate signed by unknown authority"},
		{"a name the certificate does not carry", with(func(u *url.URL, _ url.Values) { u.Host = strings.Replace(u.Host, "localhost", "127.0.0.1", 1) }), "doesn't contain any IP SANs"},
		{"no TLS", with(func(_ *url.URL, q url.Values) { q.Set("sslmode", "disable") }), "rejects connection"},
		{"wrong password", with(func(u *url.URL, _ url.Values) { u.User = url.UserPassword(u.User.Username(), "wrong-"+password) }), "password authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := postgres.Open(ctx, tc.dsn)
			if err == nil {
				s.Close()
				t.Fatal("connected")
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error shows the password: %v", err)
			}
			if !strings.Contains(err.Error(), tc.because) {
				t.Fatalf("failed, but not because of %q: %v", tc.because, err)
			}
		})
	}
	if _, err := postgres.Open(ctx, "postgres://u:"+password+"@localhost:notaport/db"); err == nil || strings.Contains(err.Error(), password) {
		t.Fatalf("a malformed DSN: %v (must fail without showing the password)", err)
	}
}
