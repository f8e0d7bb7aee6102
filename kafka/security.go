package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
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
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CA file: %w", ErrSecurity, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrSecurity, caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both its certificate and key files", ErrSecurity)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %w", ErrSecurity, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
