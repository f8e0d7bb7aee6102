package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outbox-dev/outbox/internal/tlsconfig"
)

// Security is how the client encrypts and authenticates. The zero value
// is plaintext without authentication.
type Security struct {
	// TLS encrypts every connection when set (see TLSConfig).
	TLS *tls.Config
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 ("" for none).
	SASLMechanism string
	SASLUser      string
	// SASLPassword never appears in errors or logs.
	SASLPassword string
}

// ErrSecurity marks a security setting that cannot work.
var ErrSecurity = errors.New("kafka: security settings")

// Opts turns s into client options.
func (s Security) Opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(s.TLS))
	}
	if s.SASLMechanism == "" {
		if s.SASLUser != "" || s.SASLPassword != "" {
			return nil, fmt.Errorf("%w: a SASL user or password without a mechanism", ErrSecurity)
		}
		return opts, nil
	}
	if s.SASLUser == "" || s.SASLPassword == "" {
		return nil, fmt.Errorf("%w: SASL %s needs a user and a password", ErrSecurity, s.SASLMechanism)
	}
	if s.TLS == nil && s.SASLMechanism == "PLAIN" {
		return nil, fmt.Errorf("%w: SASL PLAIN sends the password in clear text; enable TLS", ErrSecurity)
	}
	switch s.SASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("%w: SASL mechanism %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrSecurity, s.SASLMechanism)
	}
	return opts, nil
}

// TLSConfig builds a client TLS configuration that verifies the broker's
// certificate and host name: against caFile when given (PEM), else the
// system roots; certFile and keyFile add a client certificate (mutual
// TLS). serverName overrides the name checked (default: the host dialled).
func TLSConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg, err := tlsconfig.Client(caFile, certFile, keyFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSecurity, err)
	}
	return cfg, nil
}
