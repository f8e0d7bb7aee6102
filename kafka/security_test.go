package kafka_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/internal/testcert"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/outbox"
)

const (
	saslUser     = "outbox"
	saslPassword = "correct-horse-battery-staple"
	wrongPass    = "tr0ub4dor&3-wrong"
)

// secureBroker is kfake with TLS and SASL/SCRAM on.
func secureBroker(t *testing.T) (addr string, ca string) {
	t.Helper()
	pair := testcert.New(t)
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Opts: []kfake.Opt{
		kfake.TLS(pair.Server), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", saslUser, saslPassword),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addrs()[0], pair.CAFile
}

func TestTLSAndSCRAMAgainstABrokerThatRequiresThem(t *testing.T) {
	addr, caFile := secureBroker(t)
	tlsCfg, err := kafka.TLSConfig(caFile, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(sec kafka.Security) error {
		p, err := kafka.NewPublisher(kafka.Config{Brokers: []string{addr}, TopicTemplate: "secure.{aggregatetype}", Security: sec})
		if err != nil {
			return err
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		m, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]int{"n": 1})
		return p.Publish(ctx, m)
	}
	good := kafka.Security{TLS: tlsCfg, SASLMechanism: "SCRAM-SHA-256", SASLUser: saslUser, SASLPassword: saslPassword}
	if err := publish(good); err != nil {
		t.Fatalf("right password over TLS: %v", err)
	}
	recs, err := kafkatest.ReadAll(t.Context(), []string{addr}, []string{"secure.order"}, mustOpts(t, good)...)
	if err != nil || len(recs) != 1 {
		t.Fatalf("read back over TLS and SASL: %d records, %v", len(recs), err)
	}

	wrong := good
	wrong.SASLPassword = wrongPass
	err = publish(wrong)
	if err == nil {
		t.Fatal("a wrong password published")
	}
	if strings.Contains(err.Error(), wrongPass) || strings.Contains(err.Error(), saslPassword) {
		t.Fatalf("the error shows a password: %v", err)
	}
	if outbox.IsPermanent(kafka.Classify(err)) {
		t.Fatalf("an authentication failure would dead-letter every event: %v", err)
	}
	// The broker refuses the credentials (kfake by closing the
	// connection): the publisher says so, as an authorization failure,
	// not as an outage.
	p, err := kafka.NewPublisher(kafka.Config{Brokers: []string{addr}, TopicTemplate: "secure.{aggregatetype}", Security: wrong})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var pingErr error
	testenv.Eventually(t, 5*time.Second, "Ping saying the relay is not authorized", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		pingErr = p.Ping(ctx) // the first attempt's refusal is seen by the next
		return errors.Is(pingErr, kafka.ErrAuthorization)
	})
	if !strings.Contains(pingErr.Error(), "SASL") || strings.Contains(pingErr.Error(), wrongPass) {
		t.Fatalf("Ping with a wrong password: %v, want it to name SASL, without the password", pingErr)
	}

	noTLS := good
	noTLS.TLS = nil
	if err := publish(noTLS); err == nil {
		t.Fatal("plaintext reached a TLS listener")
	}
	// Each refusal must be the one named: a config that failed to build
	// (nil, so plaintext) would fail too, for another reason.
	systemRoots, err := kafka.TLSConfig("", "", "", "")
	if err != nil || systemRoots == nil {
		t.Fatalf("system roots: %v", err)
	}
	untrusted := good
	untrusted.TLS = systemRoots
	var unknownCA x509.UnknownAuthorityError
	if err := publish(untrusted); !errors.As(err, &unknownCA) {
		t.Fatalf("a certificate from an unknown CA: %v, want x509.UnknownAuthorityError", err)
	}
	wrongName, err := kafka.TLSConfig(caFile, "", "", "kafka.example.com")
	if err != nil || wrongName == nil {
		t.Fatalf("TLS config for another host name: %v", err)
	}
	misnamed := good
	misnamed.TLS = wrongName
	var hostname x509.HostnameError
	if err := publish(misnamed); !errors.As(err, &hostname) {
		t.Fatalf("a certificate for another host name: %v, want x509.HostnameError", err)
	}
}

func mustOpts(t *testing.T, s kafka.Security) []kgo.Opt {
	t.Helper()
	opts, err := s.Opts()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

func TestSecuritySettingsThatCannotWork(t *testing.T) {
	tlsCfg, err := kafka.TLSConfig("", "", "", "")
	if err != nil || tlsCfg == nil {
		t.Fatalf("system roots: %v", err)
	}
	for _, tc := range []struct {
		name string
		sec  kafka.Security
	}{
		{"plain without TLS", kafka.Security{SASLMechanism: "PLAIN", SASLUser: "u", SASLPassword: "p"}},
		{"password without mechanism", kafka.Security{SASLPassword: "p"}},
		{"mechanism without password", kafka.Security{SASLMechanism: "SCRAM-SHA-512", SASLUser: "u"}},
		{"unknown mechanism", kafka.Security{TLS: tlsCfg, SASLMechanism: "GSSAPI", SASLUser: "u", SASLPassword: "secret-value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.sec.Opts()
			if !errors.Is(err, kafka.ErrSecurity) {
				t.Fatalf("err %v, want ErrSecurity", err)
			}
			if strings.Contains(err.Error(), "secret-value") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	if _, err := kafka.TLSConfig("/nonexistent/ca.pem", "", "", ""); !errors.Is(err, kafka.ErrSecurity) {
		t.Fatalf("missing CA file: %v", err)
	}
	if _, err := kafka.TLSConfig("", "cert.pem", "", ""); !errors.Is(err, kafka.ErrSecurity) {
		t.Fatalf("certificate without key: %v", err)
	}
}
